"""The DeepSpeed engine takes the same optimizer step as TorchEngine, on one rank and on two.

The loop relies on three properties tested here: micro-batch losses already divided by the
global unit count are not rescaled (one step over two micro-batches equals one full-batch
TorchEngine step), gradients are averaged across ranks (two ranks with
``denominator = global_units / 2`` equal the single-process full batch), and the checkpoint
restores weights, optimizer moments and the LR schedule (a resumed run continues exactly).
The optimizer is set up so its first update is nearly linear in the gradient (see
``SETTINGS_LINEAR``), so a gradient scaled by any wrong factor shows in the parameters.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from torch import nn

from mm_gmpo.testing import tiny_model_dir
from mm_gmpo.testing.dist import run_two_ranks, single_rank_group
from mm_gmpo.testing.modules import load_module_file
from mm_gmpo.train.ds_engine import DeepSpeedEngine, build_ds_config
from mm_gmpo.train.engine import OptimSettings

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


# The worker script doubles as the helper module (one copy of the batch and reference).
H = load_module_file(HERE / "ds_two_rank_worker.py", "ds_two_rank_worker")


@pytest.fixture(scope="module")
def model_dir() -> Path:
    return tiny_model_dir("qwen2")


@pytest.fixture(scope="module")
def batch(model_dir: Path) -> dict[str, torch.Tensor]:
    return H.build_batch(model_dir)


@pytest.fixture(scope="module")
def single_rank() -> Iterator[None]:
    """A world-size-1 gloo group for this module's DeepSpeed engines, removed afterwards."""
    with single_rank_group():
        yield


# --- cheap checks that need no process group -------------------------------------------------


def test_importing_the_engine_does_not_import_deepspeed() -> None:
    code = (
        "import sys, mm_gmpo, mm_gmpo.train.ds_engine, mm_gmpo.train.dist; "
        "assert 'deepspeed' not in sys.modules, 'deepspeed imported eagerly'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=600, cwd=REPO)


def test_missing_deepspeed_names_the_package(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "deepspeed", None)  # makes `import deepspeed` fail
    with pytest.raises(ImportError, match="'deepspeed' package"):
        DeepSpeedEngine(nn.Linear(2, 2), OptimSettings())


def test_config_owns_the_step_boundary_and_clips() -> None:
    settings = OptimSettings(grad_clip=0.5)
    cfg = build_ds_config(settings, zero_stage=2, bf16=False, extra_config={"zero_optimization": {"x": 1}})
    assert cfg["managed_gradient_accumulation"] is False
    assert cfg["gradient_accumulation_steps"] == 1
    assert cfg["gradient_clipping"] == 0.5
    assert cfg["zero_optimization"] == {"stage": 2, "x": 1}  # merged, not replaced
    # stage 0 in fp32 clips in the engine's own hook, so DeepSpeed must not clip twice
    assert build_ds_config(settings, zero_stage=0, bf16=False)["gradient_clipping"] == 0.0
    assert build_ds_config(settings, zero_stage=0, bf16=True)["gradient_clipping"] == 0.5
    with pytest.raises(ValueError, match="zero_stage"):
        build_ds_config(settings, zero_stage=4, bf16=False)


# --- one rank: DeepSpeed over two micro-batches == TorchEngine on the full batch ---------------


FROZEN = ("model.layers.0.mlp.up_proj.weight",)


@pytest.mark.parametrize(
    ("stage", "grad_clip", "checkpointing", "frozen"),
    [
        (0, 1.0, False, ()),  # our clip hook; clipping active (norm ~5)
        (1, 0.0, False, ()),
        (2, 0.0, True, ()),  # no clipping: parameters expose any gradient scale error
        # DeepSpeed's clipping; weights (a frozen one too) gathered by state_dict_for_save
        (3, 1.0, False, FROZEN),
    ],
    ids=["zero0-clip", "zero1", "zero2-checkpointing", "zero3-clip-frozen"],
)
def test_two_micro_batches_match_torch_engine_full_batch(
    single_rank: None,
    model_dir: Path,
    batch: dict[str, torch.Tensor],
    stage: int,
    grad_clip: float,
    checkpointing: bool,
    frozen: tuple[str, ...],
) -> None:
    settings = OptimSettings(**H.SETTINGS_LINEAR, grad_clip=grad_clip)
    ref_loss, ref_stats, ref_state = H.reference_step(model_dir, settings, batch, "gmpo", frozen)

    engine = DeepSpeedEngine(
        H.load_model(model_dir, frozen), settings, zero_stage=stage, gradient_checkpointing=checkpointing
    )
    if checkpointing:
        assert engine.unwrapped_model().is_gradient_checkpointing
    loss = H.micro_losses(engine, batch, list(range(H.BATCH)), 2, "gmpo", float(H.BATCH))
    stats = engine.step()
    state = H.full_state(engine)

    initial = H.load_model(model_dir).state_dict()
    assert loss == pytest.approx(ref_loss, abs=1e-6)
    assert stats["lr"] == pytest.approx(ref_stats["lr"])
    assert stats["grad_norm"] == pytest.approx(ref_stats["grad_norm"], rel=1e-5)
    if grad_clip:
        assert stats["grad_norm"] > 2 * grad_clip  # the clip really cut the update
    assert set(state) == set(ref_state)
    assert H.max_abs_diff(ref_state, initial) > 1e-3  # the step moved the weights...
    assert H.max_abs_diff(state, ref_state) < 1e-6  # ...exactly as the full-batch step did
    for name in frozen:
        assert torch.equal(state[name], initial[name])


@pytest.mark.slow  # the first run JIT-compiles DeepSpeed's CPU Adam op (~70 s on 2 cores)
def test_optimizer_offload_matches_torch_engine(
    single_rank: None, model_dir: Path, batch: dict[str, torch.Tensor]
) -> None:
    settings = OptimSettings(**H.SETTINGS_LINEAR, grad_clip=0.0)
    ref_loss, ref_stats, ref_state = H.reference_step(model_dir, settings, batch, "gmpo")
    engine = DeepSpeedEngine(H.load_model(model_dir), settings, zero_stage=2, offload=True)
    assert type(engine.optimizer.optimizer).__name__ == "DeepSpeedCPUAdam"
    loss = H.micro_losses(engine, batch, list(range(H.BATCH)), 2, "gmpo", float(H.BATCH))
    stats = engine.step()
    assert loss == pytest.approx(ref_loss, abs=1e-6)
    assert stats["grad_norm"] == pytest.approx(ref_stats["grad_norm"], rel=1e-5)
    assert H.max_abs_diff(H.full_state(engine), ref_state) < 1e-6


def test_checkpoint_round_trip_resumes_exactly(
    single_rank: None, model_dir: Path, batch: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    """Save after step 1; a fresh engine that loads it takes the same step 2 as the original.

    Warm-up makes the LR differ per step and AdamW's moments make step 2 depend on step 1, so
    the comparison fails if the schedule, the optimizer state or the weights are not restored.
    """
    settings = OptimSettings(lr=1e-2, warmup_steps=3, total_steps=10, scheduler="cosine", grad_clip=1.0)
    rows = list(range(H.BATCH))

    def one_step(engine: DeepSpeedEngine) -> dict[str, float]:
        H.micro_losses(engine, batch, rows, 2, "gmpo", float(H.BATCH))
        return engine.step()

    original = DeepSpeedEngine(H.load_model(model_dir), settings, zero_stage=2)
    first = one_step(original)
    after_first = H.full_state(original)
    original.save_state(tmp_path)
    second = one_step(original)
    after_second = H.full_state(original)

    resumed = DeepSpeedEngine(H.load_model(model_dir), settings, zero_stage=2)
    resumed.load_state(tmp_path)
    assert H.max_abs_diff(H.full_state(resumed), after_first) == 0.0
    resumed_second = one_step(resumed)
    assert H.max_abs_diff(after_second, after_first) > 1e-3
    assert first["lr"] == pytest.approx(settings.lr / 3)
    assert resumed_second["lr"] == pytest.approx(second["lr"]) == pytest.approx(2 * settings.lr / 3)
    assert resumed_second["grad_norm"] == pytest.approx(second["grad_norm"], rel=1e-6)
    assert H.max_abs_diff(H.full_state(resumed), after_second) < 1e-7

    with pytest.raises(FileNotFoundError):
        resumed.load_state(tmp_path / "empty")


# --- two ranks under torchrun ----------------------------------------------------------------


@pytest.mark.slow
def test_two_ranks_average_to_the_full_batch_step(model_dir: Path, tmp_path: Path) -> None:
    """Each rank takes half the sequences with denominator = global units / 2; DeepSpeed's
    cross-rank average must give the single-process full-batch loss, grad norm and update
    (ZeRO 0, 2 and 3; dapo checks the token-unit count, which differs between the ranks)."""
    out = tmp_path / "report.json"
    args = ["--model-dir", str(model_dir), "--out", str(out)]
    returncode, log = run_two_ranks(HERE / "ds_two_rank_worker.py", args, timeout_s=900)
    assert returncode == 0 and out.exists(), log[-4000:]

    report = json.loads(out.read_text())
    assert report["world_size"] == 2
    assert report["rank_sum"] == 3.0  # all_reduce_sum(rank + 1) over ranks 0 and 1
    cases = {k: v for k, v in report.items() if k.startswith("stage")}
    assert set(cases) == {"stage0_gmpo", "stage2_gmpo", "stage2_dapo", "stage3_gmpo"}
    for name, case in cases.items():
        assert case["global_units"] == case["expected_units"], name
        a, b = case["rank_losses"]
        assert abs(a - b) > 1e-3, f"{name}: ranks should have seen different sequences"
        assert case["ds_loss"] == pytest.approx(case["ref_loss"], abs=1e-6), name
        assert case["ds_grad_norm"] == pytest.approx(case["ref_grad_norm"], rel=1e-5), name
        assert case["param_change"] > 1e-3, name
        assert case["param_diff"] < 1e-6, name


# --- chunked log-probs (train.logit_chunk) through the engine ---------------------------------


@pytest.mark.parametrize("stage", [2, 3])
def test_chunked_logprobs_through_engine_match_full_vocabulary(
    single_rank: None, model_dir: Path, stage: int
) -> None:
    """The LM head called per chunk as a module (ZeRO-3 gathers it, tied to the embeddings here),
    recomputed in backward: the same log-probs and the same step as the full-logits path."""
    from transformers import AutoTokenizer

    from mm_gmpo.text.path import TextPolicyPath
    from mm_gmpo.train.collate import collate_prompt_response

    tok = AutoTokenizer.from_pretrained(model_dir)
    gen = torch.Generator().manual_seed(1)
    batch = collate_prompt_response(
        [torch.randint(0, 400, (n,), generator=gen).tolist() for n in (5, 9, 3)],
        [torch.randint(0, 400, (n,), generator=gen).tolist() for n in (7, 2, 12)],
        tok.pad_token_id,
    )
    real = batch.response_mask.bool()  # [B, R]

    def step(chunk: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        engine = DeepSpeedEngine(
            H.load_model(model_dir), OptimSettings(**H.SETTINGS_LINEAR), zero_stage=stage
        )
        logp, _ = TextPolicyPath(tok, "none", 64, logit_chunk=chunk).forward(engine.module, batch, 0.7)
        engine.backward((logp * batch.response_mask).sum() / real.sum())
        engine.step()
        return logp.detach(), H.full_state(engine)

    ref_logp, ref_state = step(0)
    logp, state = step(5)
    assert float((logp - ref_logp)[real].abs().max()) < 1e-5
    initial = H.load_model(model_dir).state_dict()
    assert H.max_abs_diff(ref_state, initial) > 1e-3  # the step moved the weights...
    assert H.max_abs_diff(state, ref_state) < 1e-6  # ...and the chunked path moved them the same
