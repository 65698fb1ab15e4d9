"""Backend choice (vLLM when usable, else transformers) and checkpoint path resolution."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from mm_gmpo.evaluation import generators
from mm_gmpo.evaluation.generators import BackendUnavailable, pick_backend, resolve_model_dir, vllm_available
from mm_gmpo.train.checkpoint import COMPLETE, checkpoint_root


def test_auto_picks_vllm_only_when_it_can_run():
    expected = "vllm" if vllm_available() is None else "hf"
    assert pick_backend("auto") == expected
    assert pick_backend("hf") == "hf"
    assert pick_backend("ground-truth") == "ground-truth"


def test_without_vllm_auto_falls_back_and_explicit_vllm_explains(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "vllm" else real(name, *a)
    )
    assert "not installed" in vllm_available(cpu_ok=True)
    assert pick_backend("auto") == "hf"
    with pytest.raises(BackendUnavailable, match="use --backend hf"):
        pick_backend("vllm")
    with pytest.raises(ValueError, match="backend must be one of"):
        pick_backend("tensorrt")


def test_eval_vllm_engine_gets_the_spec_and_the_paths_own_settings(monkeypatch):
    """The evaluation engine is built from the same Config a run would use, plus the path's options."""
    import mm_gmpo.rollout.vllm as vllm_module

    seen = {}

    class Recorder:
        def __init__(self, model_dir, **kwargs):
            seen.update(kwargs, model_dir=model_dir)

    monkeypatch.setattr(vllm_module, "VLLMEngine", Recorder)
    spec = generators.ModelSpec("m", modality="vl", tensor_parallel_size=2, dtype="bf16", seed=1)
    generators._vllm_engine(generators.spec_config(spec), "m", "the path's request builder")
    assert seen["model_dir"] == "m" and str(seen["dtype"]) == "torch.bfloat16"
    assert seen["tensor_parallel_size"] == 2 and seen["seed"] == 1 and seen["enable_sleep_mode"] is False
    assert seen["requests"] == "the path's request builder"


def _fake_model(folder: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "config.json").write_text("{}")
    return folder


def test_checkpoint_and_run_folders_resolve_to_their_model(tmp_path):
    plain = _fake_model(tmp_path / "plain")
    assert resolve_model_dir(str(plain), tmp_path) == str(plain)
    ckpt = tmp_path / "ckpt"
    _fake_model(ckpt / "model")
    assert resolve_model_dir(str(ckpt), tmp_path) == str(ckpt / "model")
    run = tmp_path / "run"
    for step in (5, 10, 20):
        _fake_model(checkpoint_root(run) / f"step_{step}" / "model")
        if step != 20:  # step 20 is half-written: no COMPLETE marker
            (checkpoint_root(run) / f"step_{step}" / COMPLETE).write_text("")
    assert resolve_model_dir(str(run), tmp_path) == str(checkpoint_root(run) / "step_10" / "model")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        resolve_model_dir(str(_empty(tmp_path)), tmp_path)
    assert resolve_model_dir("Qwen/Qwen2.5-Math-7B", tmp_path) == "Qwen/Qwen2.5-Math-7B"  # hub ids pass


def _empty(tmp_path: Path) -> Path:
    d = tmp_path / "nothing"
    d.mkdir()
    return d


def test_a_refused_prompt_scores_zero_and_keeps_its_place(tmp_path):
    from mm_gmpo.data.records import Record
    from mm_gmpo.evaluation.benchmarks import MATH_PROTOCOL
    from mm_gmpo.evaluation.generators import ModelSpec, build_generator
    from mm_gmpo.testing import tiny_model_dir

    short = Record("s", "What is 1 + 1?", "2")
    long = Record("l", "What is 1 + 1? " * 40, "2")
    gen = build_generator(
        ModelSpec(str(tiny_model_dir("qwen2")), backend="hf", max_prompt_len=10**6), tmp_path
    )
    gen.path.max_prompt_len = len(gen.path.build_prompt(short).input_ids)  # the short one just fits
    out = gen.generate([long, short, long], MATH_PROTOCOL.replace(max_new_tokens=3), seed=0)
    assert [len(s) for s in out.samples] == [1, 1, 1]
    assert "over data.max_prompt_len" in out.samples[0][0].error and out.samples[0][0].text == ""
    assert out.samples[1][0].error is None and 1 <= out.samples[1][0].num_tokens <= 3
    assert out.samples[2][0].error is not None
    assert out.prompts[1].endswith("<|im_start|>assistant\n")
