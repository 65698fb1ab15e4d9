"""The supervised warm start runs before any engine wraps the model, so it gives the same
starting policy under the torch engine and DeepSpeed ZeRO-2 and ZeRO-3 (it used to call
``backward`` beneath DeepSpeed's gradient hooks: "has already been reduced" at ZeRO-2, a
size-0 tensor at ZeRO-3), and an RL step follows it under each. The runs follow one another
in one process, each with its own process group, as the seeds of ``mm-gmpo demo`` do."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mm_gmpo.testing.dist import DIST_ENV
from mm_gmpo.train import dist
from mm_gmpo.train.build import build_run
from mm_gmpo.train.config import load_config

REPO = Path(__file__).resolve().parents[2]
SMALL = [
    "train.progress=false",
    "train.log_tensorboard=false",
    "warm_start.steps=2",
    "warm_start.batch_size=8",
    "train.steps=1",
    "train.prompts_per_step=4",
    "rollout.n=2",
    "rollout.max_new_tokens=3",
    "train.mini_batches=1",
    "reward.num_workers=1",
    "data.synthetic_train_size=16",
    "data.eval=",
]


@pytest.fixture()
def no_launcher(monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain single-process runs: each build_run makes its own one-rank group and removes it on
    close, as the runs of ``mm-gmpo demo --seeds 0 1 2`` do one after the other."""
    for key in DIST_ENV:
        monkeypatch.delenv(key, raising=False)


def _warm_started(tmp_path: Path, engine: list[str]) -> tuple[dict[str, torch.Tensor], list[float], float]:
    """Full weights after build_run (warm start included), its losses, and one RL step's rows."""
    cfg = load_config(REPO / "configs" / "demo_text.yaml", [f"train.output_dir={tmp_path}", *SMALL, *engine])
    run = build_run(cfg)
    try:
        full = run.trainer.engine.state_dict_for_save()  # ZeRO-3: gathered; else None
        module = run.trainer.engine.unwrapped_model()
        state = full if full is not None else {k: v.detach().clone() for k, v in module.state_dict().items()}
        rows = run.trainer.rl_step()["rows_trained"]
        return state, run.warm_start_losses, rows
    finally:
        run.close()
        assert not dist.is_initialized()  # the run removed its group; the next one makes its own


@pytest.mark.slow  # three runs, two of them DeepSpeed (~1 min on 2 loaded cores)
def test_warm_start_is_the_same_under_every_engine(tmp_path: Path, no_launcher: None) -> None:
    pytest.importorskip("deepspeed")
    torch_state, torch_losses, _ = _warm_started(tmp_path / "torch", [])
    from safetensors.torch import load_file

    initial = load_file(str(tmp_path / "torch" / "tiny_model" / "model.safetensors"))
    assert len(torch_losses) == 2
    assert any(not torch.equal(torch_state[k], initial[k]) for k in initial)  # it trained
    for stage in (2, 3):
        state, losses, rows = _warm_started(
            tmp_path / f"zero{stage}", ["train.engine=deepspeed", f"train.zero_stage={stage}"]
        )
        assert losses == pytest.approx(torch_losses, abs=1e-6), stage
        for name, value in torch_state.items():
            torch.testing.assert_close(state[name].float(), value.float(), atol=1e-6, rtol=0, msg=name)
        assert rows == 4 * 2  # and the RL step after it trains under DeepSpeed
