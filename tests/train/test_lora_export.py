"""``mm-gmpo export --merge``: a LoRA checkpoint becomes a plain transformers model with the
adapted model's log-probs; ``eval`` takes the adapter checkpoint and the export alike."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import PeftModel

from mm_gmpo.cli import main
from mm_gmpo.policy_paths import build_policy_path
from mm_gmpo.testing import tiny_model_dir
from mm_gmpo.testing.parity import nonzero_adapters
from mm_gmpo.train.config import load_config

TOL = 1e-5


def lora_run(tmp_path: Path, modality: str, *overrides: str):
    """A run directory with one complete LoRA checkpoint (as the trainer writes it), and the
    adapted model it holds."""
    kind = "qwen2" if modality == "text" else "qwen2_5_vl"
    cfg = load_config(None, [f"modality={modality}", "model.lora_rank=4", *overrides])
    parts = build_policy_path(cfg, tiny_model_dir(kind))
    nonzero_adapters(parts.model)
    ckpt = tmp_path / "run" / "checkpoints" / "step_00000001"
    parts.model.save_pretrained(ckpt / "model", save_embedding_layers=False)
    parts.saveable.save_pretrained(ckpt / "model")
    (ckpt / "COMPLETE").write_text("1\n")
    return tmp_path / "run", parts.model.eval()


def logp(model: torch.nn.Module, **inputs: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return torch.log_softmax(model(**inputs).logits.float(), dim=-1)  # [B, T, V]


def test_text_export_loads_with_auto_class_and_keeps_the_adapted_logprobs(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    run, adapted = lora_run(tmp_path, "text")
    out = tmp_path / "merged"
    assert main(["export", str(run), "--merge", "--out", str(out)]) == 0
    files = {p.name for p in out.iterdir()}
    assert {"model.safetensors", "config.json", "tokenizer_config.json"} <= files
    assert "adapter_config.json" not in files
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    ids = torch.randint(0, 480, (3, 12), generator=torch.Generator().manual_seed(1))  # [B, T]
    want, got = logp(adapted, input_ids=ids), logp(merged, input_ids=ids)
    assert (want - got).abs().max() < TOL
    with adapted.disable_adapter():
        assert (logp(adapted, input_ids=ids) - got).abs().max() > 1e-2  # the adapter is in the export


def test_vl_export_merges_language_and_vision_adapters(tmp_path: Path) -> None:
    from PIL import Image
    from transformers import AutoProcessor, Qwen2_5_VLForConditionalGeneration

    targets = "model.lora_target_modules=[qkv, q_proj, gate_proj]"  # vision tower adapted too
    run, adapted = lora_run(tmp_path, "vl", "model.freeze_vision_tower=false", targets)
    assert any(".visual." in n for n, _ in adapted.named_parameters() if "lora_" in n)
    out = tmp_path / "merged"
    assert main(["export", str(run / "checkpoints" / "step_00000001"), "--merge", "--out", str(out)]) == 0
    merged = Qwen2_5_VLForConditionalGeneration.from_pretrained(out, dtype=torch.float32).eval()
    processor = AutoProcessor.from_pretrained(out)
    image = Image.new("RGB", (56, 56))
    image.putdata([(x * 4 % 256, y * 4 % 256, (x + y) % 256) for y in range(56) for x in range(56)])
    text = "<|vision_start|><|image_pad|><|vision_end|>How many squares?"
    inputs = dict(processor(text=[text], images=[image], return_tensors="pt"))
    assert (logp(adapted, **inputs) - logp(merged, **inputs)).abs().max() < TOL


def test_export_errors_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = str(tmp_path / "out")
    assert main(["export", str(tmp_path / "missing"), "--merge", "--out", out]) == 2
    assert "no such checkpoint" in capsys.readouterr().err
    full = tmp_path / "full" / "model"
    full.mkdir(parents=True)
    (full / "config.json").write_text("{}")
    assert main(["export", str(full.parent), "--merge", "--out", out]) == 2
    assert "not a LoRA adapter" in capsys.readouterr().err
    run, _ = lora_run(tmp_path, "text")
    assert main(["export", str(run), "--out", out]) == 0  # no --merge: the adapter as saved
    assert (Path(out) / "adapter_config.json").is_file()
    assert main(["export", str(run), "--merge", "--out", out]) == 2  # never over an existing export
    assert "not empty" in capsys.readouterr().err
    config = run / "checkpoints" / "step_00000001" / "model" / "adapter_config.json"
    config.write_text(config.read_text().replace(str(tiny_model_dir("qwen2")), str(tmp_path / "gone")))
    assert main(["export", str(run), "--merge", "--out", str(tmp_path / "out2")]) == 2
    assert "is not a saved model directory" in capsys.readouterr().err


def test_eval_takes_the_adapter_checkpoint_and_the_export_alike(tmp_path: Path) -> None:
    from mm_gmpo.data.records import Record
    from mm_gmpo.evaluation.benchmarks import MATH_PROTOCOL
    from mm_gmpo.evaluation.generators import ModelSpec, build_generator

    run, _ = lora_run(tmp_path, "text")
    out = tmp_path / "merged"
    assert main(["export", str(run), "--merge", "--out", str(out)]) == 0
    records = [Record(str(i), f"What is {i} + {i}?", str(2 * i)) for i in range(3)]
    protocol = MATH_PROTOCOL.replace(max_new_tokens=8, temperature=1.0, n=2)  # seeded sampling
    texts = []
    for model in (run, out, tiny_model_dir("qwen2")):
        gen = build_generator(ModelSpec(str(model), backend="hf", max_prompt_len=512), tmp_path)
        assert isinstance(gen.engine.model, PeftModel) == (model == run)
        texts.append([s.text for samples in gen.generate(records, protocol, seed=0).samples for s in samples])
    assert texts[0] == texts[1]
    assert texts[0] != texts[2]  # the adapter changed the answers, so it was evaluated
    with pytest.raises(ValueError, match="export CHECKPOINT --merge"):
        build_policy_path(
            load_config(None, []), run / "checkpoints" / "step_00000001" / "model", weights=False
        )
