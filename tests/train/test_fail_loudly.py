"""What a user sees when a run cannot do what it was asked: one line on stderr, exit status 2,
before any model is loaded where the cause is knowable then; never a run that trains nothing
and reports success. A real bug keeps its traceback."""

from __future__ import annotations

import importlib.util
import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

from mm_gmpo.cli import main
from mm_gmpo.data.records import BadRecordError
from mm_gmpo.objective import LOSSES
from mm_gmpo.train.config import ConfigError, load_config, to_yaml

REPO = Path(__file__).resolve().parents[2]
DEMO = str(REPO / "configs" / "demo_text.yaml")
FAST = [
    "train.progress=false",
    "train.log_tensorboard=false",
    "warm_start.steps=0",
    "train.steps=1",
    "train.prompts_per_step=4",
    "rollout.n=2",
    "rollout.max_new_tokens=3",
    "train.mini_batches=1",
    "reward.num_workers=1",
    "data.synthetic_train_size=16",
    "data.synthetic_eval_size=4",
]


def _train(tmp_path: Path, *overrides: str, debug: bool = False) -> int:
    argv = ["train", DEMO, f"train.output_dir={tmp_path / 'run'}", *FAST, *overrides]
    return main(["--debug", *argv] if debug else argv)


def _one_line(capsys) -> str:
    """The error line: the last on stderr, the only one saying error, no traceback (progress bars of
    model loading may come before it)."""
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if line.startswith(("error:", "config error:"))]
    assert len(errors) == 1 and "Traceback" not in err, err
    assert err.rstrip().splitlines()[-1] == errors[0], err
    return errors[0]


@pytest.mark.parametrize("loss", sorted(LOSSES))
def test_one_response_per_prompt_is_refused_for_every_group_loss(loss: str) -> None:
    with pytest.raises(ConfigError, match=rf"rollout.n=1: loss.name={loss} .* needs rollout.n >= 2"):
        load_config(None, [f"loss.name={loss}", "rollout.n=1"])


def test_torch_engine_under_a_launcher_is_refused_before_loading() -> None:
    from mm_gmpo.train.config import validate_world

    with pytest.raises(
        ConfigError, match="train.engine=torch runs in one process, not 2; use train.engine=deepspeed"
    ):
        validate_world(load_config(None, []), 2)
    validate_world(load_config(None, ["train.engine=deepspeed"]), 2)


def test_config_error_is_one_line_and_exit_2(tmp_path, capsys) -> None:
    assert _train(tmp_path, "rollout.n=1") == 2
    assert _one_line(capsys).startswith("config error: rollout.n=1: loss.name=gmpo compares")


@pytest.mark.parametrize("missing", ["data/no_such_train.jsonl", "/no/such/train.jsonl"])
def test_missing_data_file_fails_before_any_model_loads(tmp_path, capsys, missing) -> None:
    # "data/x.jsonl" has one slash, like a hub id: a data-file name is never sent to the hub.
    assert _train(tmp_path, f"data.train={missing}") == 2
    assert _one_line(capsys).startswith(f"error: data.train: no such data file or directory: {missing} (")
    assert not (tmp_path / "run" / "tiny_model").exists()  # nothing was built or loaded


def test_unreachable_hub_data_set_fails_in_one_line(tmp_path, capsys, monkeypatch) -> None:
    import huggingface_hub

    def unreachable(*args, **kwargs):
        raise ConnectionError("Name or service not known")

    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.HfApi, "repo_info", unreachable)
    assert _train(tmp_path, "data.train=someone/no-such-set") == 2
    assert _one_line(capsys) == (
        "error: data.train: someone/no-such-set: no such data file, and as a hub data set it cannot be "
        "used: the Hugging Face hub is unreachable (ConnectionError: Name or service not known) "
        "(HF_DATASETS_OFFLINE=1 reads a cached copy)"
    )


def test_malformed_jsonl_line_is_named_or_counted(tmp_path, capsys) -> None:
    from mm_gmpo.train.build import load_split_report

    data = tmp_path / "train.jsonl"
    data.write_text('{"problem": "1+1?", "answer": "2"}\n{"problem": "2+2?", "answ\n[1, 2]\n')
    assert _train(tmp_path, f"data.train={data}", "data.on_bad_record=error") == 2
    assert (
        _one_line(capsys) == f"error: {data}: line 2: invalid JSON at column 26 (Invalid control character)"
    )

    cfg = load_config(None, ["data.on_bad_record=skip"])
    result = load_split_report(str(data), cfg, "train")
    assert len(result.records) == 1
    assert result.skipped == {"invalid JSON": 1, "not a JSON object": 1}


def test_model_path_is_checked_before_anything_loads(tmp_path, capsys, monkeypatch) -> None:
    assert _train(tmp_path, "model.path=/no/such/model") == 2
    assert _one_line(capsys) == "error: model.path: no such model directory: /no/such/model"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert _train(tmp_path, "model.path=mm-gmpo-tests/no-such-model") == 2
    line = _one_line(capsys)
    assert line.startswith("error: model.path: 'mm-gmpo-tests/no-such-model' is a hub id, HF_HUB_OFFLINE")


def test_a_missing_engine_package_is_one_line(tmp_path, capsys, monkeypatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "deepspeed" else real(name, *a)
    )
    assert _train(tmp_path, "train.engine=deepspeed") == 2
    assert _one_line(capsys) == (
        "config error: train.engine=deepspeed needs the deepspeed package, which is not installed here"
    )


def test_every_prompt_refused_stops_the_run_with_the_cause(tmp_path, capsys) -> None:
    """The demo pointed at prompts over data.max_prompt_len: an error, not 0 rows and exit 0."""
    assert _train(tmp_path, "data.max_prompt_len=4") == 2
    line = _one_line(capsys)
    assert line.startswith(
        "error: step 1: none of the 16 records drawn (one pass over data.train, 16 records)"
    )
    assert "prompt_too_long x16, e.g. record 'largest-" in line and "over data.max_prompt_len=4" in line


def test_bad_record_under_error_is_one_line_and_debug_shows_the_traceback(tmp_path, capsys) -> None:
    assert _train(tmp_path, "data.on_bad_record=error", "data.max_prompt_len=4") == 2
    line = _one_line(capsys)
    assert line.startswith("error: record 'largest-") and line.endswith("over data.max_prompt_len=4")
    with pytest.raises(BadRecordError, match="over data.max_prompt_len=4"):
        _train(tmp_path, "data.on_bad_record=error", "data.max_prompt_len=4", debug=True)


def test_a_bug_keeps_its_traceback(tmp_path, monkeypatch) -> None:
    import mm_gmpo.train.run as run_module

    def broken(cfg):
        raise RuntimeError("a bug in the loop")

    monkeypatch.setattr(run_module, "train", broken)
    with pytest.raises(RuntimeError, match="a bug in the loop"):
        _train(tmp_path)


def test_only_rank_zero_prints_but_every_rank_exits_2(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.setenv("RANK", "1")
    assert _train(tmp_path, "optim.lrr=1") == 2
    assert capsys.readouterr().err == ""


def test_command_line_exit_status_and_stderr(tmp_path) -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mm_gmpo",
            "train",
            DEMO,
            f"train.output_dir={tmp_path}",
            "data.train=nope.jsonl",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert (
        proc.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "error: data.train: no such data file or directory: nope.jsonl (relative paths are looked up"
        )
    )


# ---------------------------------------------------------------- train.resume


def _earlier_run(out: Path, cfg_overrides: list[str], step: int = 2) -> None:
    """What an earlier run leaves: its resolved config and a complete checkpoint."""
    out.mkdir(parents=True)
    (out / "config.yaml").write_text(to_yaml(load_config(None, [f"train.output_dir={out}", *cfg_overrides])))
    ckpt = out / "checkpoints" / f"step_{step:08d}"
    ckpt.mkdir(parents=True)
    (ckpt / "COMPLETE").write_text(f"{step}\n")


def test_resume_continues_the_same_run_and_says_so(tmp_path, caplog) -> None:
    from mm_gmpo.train.resume import pick_resume

    out = tmp_path / "run"
    _earlier_run(out, ["optim.lr=1e-3"])
    with caplog.at_level(logging.WARNING, logger="mm_gmpo"):
        # A bookkeeping field (progress bar) may change; what is trained may not.
        picked = pick_resume(
            load_config(None, [f"train.output_dir={out}", "optim.lr=1e-3", "train.progress=false"])
        )
    assert picked == out / "checkpoints" / "step_00000002"
    assert (
        f"resuming from checkpoint {picked} at step 2 of 100 (train.resume unset, same config)" in caplog.text
    )


def test_a_different_run_in_the_same_output_dir_is_refused_unless_resume_is_explicit(
    tmp_path, capsys, caplog
) -> None:
    from mm_gmpo.train.resume import pick_resume

    out = tmp_path / "run"
    _earlier_run(out, ["optim.lr=1e-3"])
    changed = [f"train.output_dir={out}", "optim.lr=2e-3"]
    with pytest.raises(
        ConfigError, match=r"holds a run with a different config \(optim.lr: 0.001 -> 0.002\)"
    ):
        pick_resume(load_config(None, changed))
    assert main(["train", DEMO, *changed, *FAST]) == 2
    assert "pass train.resume=auto to continue it anyway" in _one_line(capsys)

    with caplog.at_level(logging.WARNING, logger="mm_gmpo"):
        assert (
            pick_resume(load_config(None, [*changed, "train.resume=auto"]))
            == out / "checkpoints" / "step_00000002"
        )
    assert "at step 2 of 100 (train.resume=auto)" in caplog.text
    assert pick_resume(load_config(None, [*changed, "train.resume=never"])) is None
    with pytest.raises(ConfigError, match="not a complete checkpoint"):
        pick_resume(load_config(None, [*changed, f"train.resume={out}"]))


# ---------------------------------------------------------------- the end-of-run summary


def test_summary_reports_rows_skips_and_timeouts(tmp_path, caplog) -> None:
    from mm_gmpo.data.sampler import PromptSampler
    from mm_gmpo.train.run import train

    data = tmp_path / "train.jsonl"
    rows = [{"problem": f"Which is the largest of {i}, 2, 1?", "answer": str(max(i, 2))} for i in range(4)]
    rows.insert(2, {"problem": "Which is the largest of " + "7, " * 80 + "1?", "answer": "7"})
    lines = [json.dumps(r) for r in rows]
    lines.insert(1, "{not json")
    data.write_text("\n".join(lines) + "\n")
    cfg = load_config(
        DEMO,
        [
            f"train.output_dir={tmp_path / 'run'}",
            *FAST,
            f"data.train={data}",
            "data.eval=",
            "data.max_prompt_len=40",
        ],
    )
    with caplog.at_level(logging.INFO, logger="mm_gmpo"):
        summary = train(cfg)
    long_drawn = 2 in PromptSampler(5, 4, seed=0).next_batch()  # the over-long record is row 2
    assert summary["rows_trained"] == 4 * 2  # refused prompts were replaced: a full step
    assert summary["skipped_rows_at_load"] == {"data.train": {"invalid JSON": 1}}
    assert summary["skipped_records_by_reason"] == ({"prompt_too_long": 1} if long_drawn else {})
    assert summary["verifier_timeouts"] == 0 and summary["steps_without_signal"] in (0, 1)
    assert "trained 8 rows in 1 steps; skipped: data.train invalid JSON: 1" in caplog.text


@pytest.mark.slow
def test_a_bad_record_on_one_rank_stops_every_rank_with_one_line(tmp_path) -> None:
    """Only rank 1's prompt is bad: both ranks stop (no rank left waiting in a collective), both
    exit 2, and the line is printed once, by rank 0."""
    import os

    from mm_gmpo.data.sampler import PromptSampler
    from mm_gmpo.train import dist

    first = PromptSampler(4, 2, seed=0).next_batch()  # ranks 0 and 1 take one record each
    rows = [{"problem": f"Which is the largest of {i}, 2?", "answer": str(max(i, 2))} for i in range(4)]
    rows[first[1]] = {"problem": "Which is the largest of " + "7, " * 60 + "1?", "answer": "7"}
    data = tmp_path / "train.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
    cmd += ["--master_port", str(dist.free_port()), "-m", "mm_gmpo", "train", DEMO]
    cmd += [f"train.output_dir={tmp_path / 'run'}", *FAST, "train.prompts_per_step=2", "data.eval="]
    cmd += ["train.engine=deepspeed"]
    cmd += [f"data.train={data}", "data.max_prompt_len=40", "data.on_bad_record=error"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900, cwd=REPO, env=env)
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "over data.max_prompt_len=40" in errors[0], proc.stderr[-3000:]
    assert "exitcode  : 2" in proc.stderr  # torchrun's report: the rank exited with 2, no crash
    assert f'File "{REPO / "mm_gmpo"}' not in proc.stderr  # no traceback of ours (torchrun prints its own)
