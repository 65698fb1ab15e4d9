"""The shared loop on the text path: rollout engine, one RL step, bad input, checkpoints."""

from __future__ import annotations

import shutil

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from mm_gmpo.data.records import BadRecordError, Record
from mm_gmpo.rollout.base import SamplingSettings
from mm_gmpo.rollout.hf import HFGenerateEngine
from mm_gmpo.testing import build_tiny_qwen2
from mm_gmpo.text.path import TextPolicyPath
from mm_gmpo.train.checkpoint import latest_checkpoint, save_checkpoint
from mm_gmpo.train.config import load_config
from mm_gmpo.train.engine import OptimSettings, TorchEngine
from mm_gmpo.train.loop import Trainer


def digit_reward(texts, records, truncated):
    """A test reward with spread inside every group: the share of digits in the response."""
    rewards = [sum(c.isdigit() for c in t) / max(1, len(t)) for t in texts]
    return rewards, [float(r > 0.5) for r in rewards], {"test_counter": 1.0}


@pytest.fixture()
def tiny(tmp_path):
    d = build_tiny_qwen2(tmp_path / "m", seed=0)
    tok = AutoTokenizer.from_pretrained(d)
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
    return tok, model


def _records(n: int) -> list[Record]:
    return [Record(id=f"r{i}", problem=f"What is {i} + {i + 3}?", answer=str(2 * i + 3)) for i in range(n)]


def _trainer(tok, model, tmp_path, overrides=(), records=None):
    cfg = load_config(
        None,
        [
            f"train.output_dir={tmp_path / 'run'}",
            "data.template=none",
            "rollout.n=4",
            "rollout.max_new_tokens=8",
            "train.prompts_per_step=4",
            "train.micro_batch_size=5",
            "optim.lr=1e-2",
            *overrides,
        ],
    )
    path = TextPolicyPath(tok, cfg.data.template, cfg.data.max_prompt_len)
    engine = TorchEngine(model, OptimSettings(lr=cfg.optim.lr, grad_clip=cfg.optim.grad_clip))
    stop = sorted({tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>")})
    return Trainer(
        cfg,
        path=path,
        engine=engine,
        rollout_engine=HFGenerateEngine(model, path.pad_id, batch_size=3),
        score=digit_reward,
        train_records=records or _records(12),
        stop_token_ids=stop,
        tokenizer=tok,
    )


def test_generate_groups_contiguous_and_sampler_logp_match_trainer(tiny):
    tok, model = tiny
    torch.manual_seed(0)
    path = TextPolicyPath(tok, "none", 64)
    prompts = [path.build_prompt(r) for r in _records(5)]
    stop = (tok.convert_tokens_to_ids("<|im_end|>"),)
    engine = HFGenerateEngine(model, path.pad_id, batch_size=2)  # forces several chunks
    rollout = engine.generate(
        prompts, SamplingSettings(n=3, temperature=0.9, max_new_tokens=10, stop_token_ids=stop)
    )
    assert rollout.prompt_index == [i for i in range(5) for _ in range(3)]
    for i, ids in enumerate(rollout.prompt_ids):
        assert ids == prompts[i // 3].input_ids
    for resp, trunc in zip(rollout.response_ids, rollout.truncated):
        assert (resp[-1] in stop) != trunc
        assert stop[0] not in resp[:-1]  # nothing kept after the first stop token
        if trunc:
            assert len(resp) == 10  # cut at max_new_tokens
    batch = path.collate(rollout, list(range(len(rollout))))
    with torch.no_grad():
        logp, _ = path.forward(model, batch, temperature=0.9)
    for row, sampled in enumerate(rollout.sampler_logp):
        assert len(sampled) == len(rollout.response_ids[row])
        torch.testing.assert_close(logp[row, : len(sampled)], torch.tensor(sampled), atol=1e-5, rtol=0)


def test_rl_step_changes_every_parameter_and_logs(tiny, tmp_path):
    tok, model = tiny
    torch.manual_seed(0)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    trainer = _trainer(tok, model, tmp_path)
    metrics = trainer.rl_step()
    unchanged = [n for n, p in model.named_parameters() if torch.equal(p, before[n])]
    assert unchanged == []
    assert metrics["rows_trained"] == 16
    assert metrics["counter/test_counter"] == 1.0
    assert metrics["sampler_logp_absdiff_max"] < 1e-4
    assert metrics["log_ratio_min"] <= metrics["log_ratio_max"]
    assert trainer.state.step == 1


def test_zero_variance_groups_are_filtered_when_asked(tiny, tmp_path):
    tok, model = tiny

    def constant_reward(texts, records, truncated):
        return [1.0] * len(texts), [1.0] * len(texts), {}

    trainer = _trainer(tok, model, tmp_path, ["loss.filter_zero_variance=true"])
    trainer.score = constant_reward
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    metrics = trainer.rl_step()
    assert metrics["zero_variance_groups"] == 1.0
    assert metrics["rows_trained"] == 0
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())


def test_bad_records_skip_or_error(tiny, tmp_path):
    tok, model = tiny
    records = _records(4)
    records[1] = Record(id="empty-one", problem="   ", answer="1")
    records[2] = Record(id="long-one", problem="What is 1 + 1? " * 200, answer="2")
    trainer = _trainer(tok, model, tmp_path, ["data.on_bad_record=skip"], records=records)
    metrics = trainer.rl_step()
    assert metrics["skipped_records"] == 2
    assert metrics["rows_trained"] == 8  # two good prompts x n=4
    assert trainer.path.bad_records == {"empty_problem": 1, "prompt_too_long": 1}

    strict = _trainer(tok, model, tmp_path, ["data.on_bad_record=error"], records=records)
    with pytest.raises(ValueError, match="empty-one|long-one"):
        strict.rl_step()


def test_record_without_answer_key_is_named(tmp_path):
    from mm_gmpo.data.loaders import load_records_with_report

    src = tmp_path / "d.jsonl"
    src.write_text('{"problem": "1+1", "answer": "2"}\n{"problem": "2+2"}\n')
    with pytest.raises(ValueError, match="answer"):
        load_records_with_report(src, on_bad_record="error")
    result = load_records_with_report(src, on_bad_record="skip")
    assert len(result.records) == 1 and result.n_skipped == 1


def test_half_written_checkpoint_is_ignored(tiny, tmp_path):
    tok, model = tiny
    engine = TorchEngine(model, OptimSettings())
    out = tmp_path / "run"
    good = save_checkpoint(out, 2, model=model, tokenizer=tok, engine=engine, trainer_state={})
    # A later save that died: temporary dir left behind, and a step dir without its marker.
    crashed = save_checkpoint(out, 4, model=model, tokenizer=tok, engine=engine, trainer_state={})
    (crashed / "COMPLETE").unlink()
    (out / "checkpoints" / ".tmp_step_00000006").mkdir()
    assert latest_checkpoint(out) == good
    reloaded = AutoModelForCausalLM.from_pretrained(good / "model")
    for (name, p), (_, q) in zip(model.named_parameters(), reloaded.named_parameters()):
        assert torch.equal(p, q), name
    shutil.rmtree(good)
    assert latest_checkpoint(out) is None


def test_keep_prunes_old_checkpoints(tiny, tmp_path):
    tok, model = tiny
    engine = TorchEngine(model, OptimSettings())
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, step, model=model, tokenizer=tok, engine=engine, trainer_state={}, keep=2)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step_00000002", "step_00000003"]


def _count_forwards(trainer: Trainer) -> list[bool]:
    """Wrap the trainer's policy forward; the list gets grad-enabled (True/False) per call."""
    calls: list[bool] = []
    forward = trainer.path.forward

    def counted(*args, **kwargs):
        calls.append(torch.is_grad_enabled())
        return forward(*args, **kwargs)

    trainer.path.forward = counted
    return calls


@pytest.mark.parametrize("tis_cap", [0.0, 2.0])
def test_on_policy_step_reuses_the_update_forward_with_the_same_result(tmp_path, tis_cap):
    """One optimizer step per rollout batch: π_old from the update's forward equals the extra pass."""
    results = {}
    for reuse in (True, False):
        d = build_tiny_qwen2(tmp_path / f"m{reuse}", seed=0)
        tok = AutoTokenizer.from_pretrained(d)
        model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
        torch.manual_seed(0)
        trainer = _trainer(
            tok,
            model,
            tmp_path / str(reuse),
            [f"train.reuse_update_logp={str(reuse).lower()}", f"loss.tis_cap={tis_cap}"],
        )
        calls = _count_forwards(trainer)
        metrics = trainer.rl_step()
        results[reuse] = (calls, metrics, {n: p.detach().clone() for n, p in model.named_parameters()})
    (calls_r, m_r, p_r), (calls_x, m_x, p_x) = results[True], results[False]
    assert all(calls_r) and len(calls_r) == 4  # 16 rows / micro-batch 5: only the update forwards
    assert calls_x == [False] * 4 + [True] * 4  # the separate no-grad pass, then the update
    assert m_r["log_ratio_min"] == m_r["log_ratio_max"] == 0.0  # π_θ = π_old on every token
    for key in ("loss", "pg_loss", "sampler_logp_absdiff_max", "grad_norm", "entropy"):
        assert m_r[key] == pytest.approx(m_x[key], rel=1e-5, abs=1e-7), key
    for name in p_r:
        torch.testing.assert_close(p_r[name], p_x[name], atol=1e-6, rtol=0)


def test_several_updates_per_batch_keep_the_separate_pass(tiny, tmp_path):
    tok, model = tiny
    torch.manual_seed(0)
    trainer = _trainer(tok, model, tmp_path, ["train.ppo_epochs=2"])
    calls = _count_forwards(trainer)
    metrics = trainer.rl_step()
    assert calls == [False] * 4 + [True] * 8
    assert metrics["log_ratio_max"] > metrics["log_ratio_min"]  # the second pass is off-policy


def _long(i: int) -> Record:
    return Record(id=f"long-{i}", problem="What is 1 + 1? " * 200, answer="2")


def test_refused_prompts_are_replaced_from_the_sampler(tiny, tmp_path):
    """A step trains the rows it asked for: refused records are replaced by further draws."""
    from mm_gmpo.data.sampler import PromptSampler

    tok, model = tiny
    records = _records(12)
    first = PromptSampler(12, 4, seed=0).next_batch()
    for i in first[:2]:  # two of the first step's four records are over max_prompt_len
        records[i] = _long(i)
    trainer = _trainer(tok, model, tmp_path, records=records)
    metrics = trainer.rl_step()
    assert metrics["rows_trained"] == 16  # 4 prompts x n=4, not 2 x 4
    assert trainer.state.refused == {"prompt_too_long": 2} and metrics["skipped_records"] == 2
    assert trainer.state.rows_trained == 16
    assert trainer.sampler.position == 6  # the batch of 4 and two replacements


def test_a_step_without_any_buildable_prompt_stops(tiny, tmp_path):
    tok, model = tiny
    trainer = _trainer(tok, model, tmp_path, records=[_long(i) for i in range(6)])
    with pytest.raises(
        BadRecordError,
        match=r"step 1: none of the 6 records drawn .* prompt_too_long x6, e\.g\. record 'long-",
    ):
        trainer.rl_step()


def test_steps_that_cannot_change_the_policy_are_counted_and_said(tiny, tmp_path, caplog):
    tok, model = tiny

    def constant_reward(texts, records, truncated):
        return [0.0] * len(texts), [0.0] * len(texts), {"timeouts": 1.0}

    trainer = _trainer(tok, model, tmp_path)
    trainer.score = constant_reward
    with caplog.at_level("WARNING", logger="mm_gmpo"):
        trainer.rl_step()
    assert trainer.state.steps_without_signal == 1 and trainer.state.verifier_timeouts == 1
    assert "step 1: every prompt's 4 responses got the same reward" in caplog.text
    # The run's totals travel with checkpoints.
    ckpt = trainer.save(tmp_path / "run")
    again = _trainer(tok, model, tmp_path)
    again.restore(ckpt)
    assert again.state == trainer.state
