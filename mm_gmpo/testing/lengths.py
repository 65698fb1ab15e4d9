"""A simulated RL length mix at the paper recipe's shapes, for the micro-batch planner's test and bench.

Why simulated: the padding a micro-batch plan leaves depends only on prompt and response lengths,
and a real rollout at these shapes needs a 7B model. Prompts are like MATH's under the qwen_math
template (lognormal, median 160 tokens, 40 to 1024, one length per group of samples); responses
are lognormal with median 600 and 10% at the 3000-token cap, the heavy tail of reasoning RL.
"""

from __future__ import annotations

import math
import random

PROMPT_MEDIAN = 160
RESPONSE_MEDIAN = 600
RESPONSE_CAP = 3000
# P(r >= cap) = P(z >= ln(cap / median) / sigma) = 10% when sigma = ln(5) / z_0.9 (1.2816)
RESPONSE_SIGMA = math.log(RESPONSE_CAP / RESPONSE_MEDIAN) / 1.2816


def heavy_tailed_mix(
    prompts: int = 1024, group: int = 8, seed: int = 0, max_prompt: int = 1024
) -> tuple[list[int], list[int]]:
    """(prompt lengths, response lengths), one entry per sample, groups of ``group`` contiguous."""
    rng = random.Random(seed)
    prompt_lens: list[int] = []
    response_lens: list[int] = []
    for _ in range(prompts):
        p = min(max_prompt, max(40, round(rng.lognormvariate(math.log(PROMPT_MEDIAN), 0.55))))
        for _ in range(group):
            prompt_lens.append(p)
            r = round(rng.lognormvariate(math.log(RESPONSE_MEDIAN), RESPONSE_SIGMA))
            response_lens.append(min(RESPONSE_CAP, max(1, r)))
    return prompt_lens, response_lens
