"""A small, real, byte-level BPE tokenizer with Qwen2.5's special tokens and chat format.

Why it exists: tests, the CPU demo and CI have no Hugging Face hub, yet every code path
(chat templating, ``<|image_pad|>`` expansion, EOS handling, vLLM loading) has to run against a
tokenizer that behaves like Qwen2.5's. Training a few hundred merges on an embedded corpus takes
milliseconds, is deterministic, and because the model is byte-level any string encodes.

The result is saved with ``save_pretrained`` so callers load it with the same
``AutoTokenizer.from_pretrained(path)`` a real run uses.
"""

from __future__ import annotations

from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

# Qwen2.5 special tokens, in Qwen2.5's own order (ids follow the trained vocabulary, so they are
# small here; look them up through the tokenizer, never hard-code them).
SPECIAL_TOKENS: tuple[str, ...] = (
    "<|endoftext|>",
    "<|im_start|>",
    "<|im_end|>",
    "<|object_ref_start|>",
    "<|object_ref_end|>",
    "<|box_start|>",
    "<|box_end|>",
    "<|quad_start|>",
    "<|quad_end|>",
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)

PAD_TOKEN = "<|endoftext|>"
EOS_TOKEN = "<|im_end|>"
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."

# Target size of the trained part of the vocabulary (256 byte symbols + merges). The corpus is
# small, so training may stop a little short of it; the total is whatever comes out, the same
# every time.
_BPE_VOCAB_SIZE = 900

# One Jinja template for both the text tokenizer and the VL processor. A message's ``content`` is
# either a string or a list of parts ({"type": "text", "text": ...}, {"type": "image"},
# {"type": "video"}); image and video parts become
# <|vision_start|><|image_pad|><|vision_end|>, which the processor then expands to the right
# number of pad tokens. Without a system message the Qwen default system turn is added.
CHAT_TEMPLATE = (
    "{%- macro render(content) -%}"
    "{%- if content is string -%}{{ content }}"
    "{%- else -%}{%- for part in content -%}"
    "{%- if part.type == 'image' or part.type == 'image_url' or 'image' in part -%}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{%- elif part.type == 'video' or 'video' in part -%}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{%- elif 'text' in part -%}{{ part.text }}"
    "{%- endif -%}"
    "{%- endfor -%}{%- endif -%}"
    "{%- endmacro -%}"
    "{%- if messages[0].role != 'system' -%}"
    "{{ '<|im_start|>system\\n" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>\\n' }}"
    "{%- endif -%}"
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message.role + '\\n' }}{{ render(message.content) }}{{ '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)

# A reasoning model's chat format in the style of DeepSeek-R1-Distill (written for the tests, not
# the checkpoint's file): system text first, user and assistant turns behind their tags, and the
# generation prompt opens the assistant turn with "<think>\n" so the response starts inside the
# reasoning block. Tests hand it to the text path through ``data.chat_template``.
R1_DISTILL_STYLE_CHAT_TEMPLATE = (
    "{%- for message in messages if message.role == 'system' -%}{{ message.content }}{%- endfor -%}"
    "{%- for message in messages -%}"
    "{%- if message.role == 'user' -%}{{ '<|User|>' + message.content }}"
    "{%- elif message.role == 'assistant' -%}{{ '<|Assistant|>' + message.content + '<|im_end|>' }}"
    "{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|Assistant|><think>\n' }}{%- endif -%}"
)

# Training text: English, arithmetic, LaTeX and the prompt templates' own phrases, so common
# strings in tests and in the demo become a few tokens instead of dozens of bytes.
_CORPUS = r"""
A conversation between User and Assistant. The User asks a question, and the Assistant solves it.
The Assistant first thinks about the reasoning process in the mind and then provides the User
with the answer. The reasoning process is enclosed within <think> </think> and answer is enclosed
within <answer> </answer> tags, respectively, i.e., <think> reasoning process here </think>
<answer> answer here </answer>.
User: What is 37 + 45?
Assistant: <think> Add the tens and then the ones. 30 + 40 = 70 and 7 + 5 = 12, so 70 + 12 = 82.
</think> <answer> 82 </answer>
Please reason step by step, and put your final answer within \boxed{}.
You FIRST think about the reasoning process as an internal monologue and then provide the final
answer. The reasoning process MUST BE enclosed within <think> </think> tags. The final answer MUST
BE put in \boxed{}.
You are a helpful assistant.
What is 91 - 28? Subtract: 91 - 28 = 63. The answer is \boxed{63}.
What is 14 + 59? We add the numbers: 14 + 59 = 73. Therefore the final answer is \boxed{73}.
Let $x$ be a real number such that $x^2 - 5x + 6 = 0$. Find the sum of all possible values of $x$.
Factor the quadratic: $(x - 2)(x - 3) = 0$, so $x = 2$ or $x = 3$ and the sum is $\boxed{5}$.
Compute $\frac{3}{4} + \frac{1}{8}$. Since $\frac{3}{4} = \frac{6}{8}$, the sum is
$\frac{7}{8}$. In the triangle $ABC$, the angle $\angle ABC = 90^\circ$ and $AB = 6$, $BC = 8$.
By the Pythagorean theorem, $AC = \sqrt{AB^2 + BC^2} = \sqrt{36 + 64} = \sqrt{100} = 10$.
Find the area of the circle with radius $r = 3$. The area is $\pi r^2 = 9\pi$.
If $f(x) = 2x + 1$, then $f(f(x)) = 2(2x + 1) + 1 = 4x + 3$. The value of $f(2)$ is $5$.
The line through $(0, 0)$ and $(1, 2)$ has slope $m = \frac{2 - 0}{1 - 0} = 2$, so $y = 2x$.
How many integers $n$ satisfy $1 \le n \le 100$ and $n \equiv 3 \pmod{7}$? There are $14$.
Let $\theta$ be an angle with $\sin \theta = \frac{1}{2}$ and $0 < \theta < \frac{\pi}{2}$.
Then $\cos \theta = \frac{\sqrt{3}}{2}$ and $\tan \theta = \frac{\sqrt{3}}{3}$.
Find $\sum_{k=1}^{n} k = \frac{n(n+1)}{2}$ and $\prod_{k=1}^{n} k = n!$ for $n \geq 1$.
The matrix $\begin{pmatrix} 1 & 2 \\ 3 & 4 \end{pmatrix}$ has determinant $1 \cdot 4 - 2 \cdot 3 = -2$.
Choices: (A) 12 (B) 15 (C) 18 (D) 21. The correct option is (B), so the answer is \boxed{B}.
Find the measure of the angle. Find x. Find the length of the segment. Find the perimeter.
The figure shows a circle with center O. The chord and the tangent meet at point P.
In the diagram, the two lines are parallel, so the alternate angles are equal.
The probability that the number is even is $\frac{1}{2}$. The expected value is $3.5$.
Simplify $\left( \frac{a}{b} \right)^2 \cdot \frac{b^3}{a}$ to get $a b$. Thus the result holds.
We know that the function is increasing, hence the minimum value is attained at the left end.
Therefore, the number of ways to choose the team is $\binom{10}{3} = 120$.
The question is answered; the solution is complete, and the reasoning is correct.
"""


def _train_bpe() -> Tokenizer:
    """Train the byte-level BPE on the embedded corpus (deterministic: single pass, fixed data)."""
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    # Digits are isolated first (as Qwen2 does), so numbers tokenize one digit at a time: this keeps
    # arithmetic learnable and makes the vocabulary independent of which numbers the corpus has.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"\p{N}"), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=_BPE_VOCAB_SIZE,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tok.train_from_iterator(_CORPUS.strip().splitlines(keepends=True), trainer=trainer)
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS])
    return tok


def build_tokenizer(out_dir: str | Path) -> Path:
    """Build the tiny Qwen2.5-style tokenizer and save it to ``out_dir``.

    Load it back with ``AutoTokenizer.from_pretrained(out_dir)``. pad = ``<|endoftext|>``,
    eos = ``<|im_end|>`` (as in Qwen2.5-Instruct); there is no BOS token, as in Qwen.
    """
    from transformers import PreTrainedTokenizerFast

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    hf_tok = PreTrainedTokenizerFast(
        tokenizer_object=_train_bpe(),
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        unk_token=None,
        bos_token=None,
        model_max_length=32768,
        padding_side="right",
        clean_up_tokenization_spaces=False,
    )
    hf_tok.chat_template = CHAT_TEMPLATE
    hf_tok.save_pretrained(out)
    return out
