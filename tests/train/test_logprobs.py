"""Chunked response log-probs (``train.logit_chunk``) against the full-vocabulary reference, text path.

Same values and gradients (every parameter, the tied embedding / LM head included) with ragged
prompts and responses, temperature != 1, chunk sizes that do and do not divide R; and the memory
property itself: nothing vocabulary-wide is saved for backward, and no LM-head call covers more
than ``chunk`` positions.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from mm_gmpo.testing import build_tiny_qwen2, tiny_model_dir
from mm_gmpo.testing.dist import run_two_ranks
from mm_gmpo.text.path import TextPolicyPath
from mm_gmpo.train import logprobs
from mm_gmpo.train.collate import collate_prompt_response
from mm_gmpo.train.config import ConfigError, load_config
from mm_gmpo.train.logprobs import chunked_logp_and_entropy, output_embeddings

REPO = Path(__file__).resolve().parents[2]

PROMPT_LENS = (5, 9, 3)
RESPONSE_LENS = (7, 2, 12)  # R = 12, ragged
TOL = 1e-6  # of the largest |value| of each compared tensor (fp32)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = build_tiny_qwen2(tmp_path_factory.mktemp("m"), seed=0)
    tok = AutoTokenizer.from_pretrained(d)
    model = AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
    assert model.config.tie_word_embeddings
    return tok, model


@pytest.fixture(scope="module")
def batch(tiny):
    tok, model = tiny
    gen = torch.Generator().manual_seed(1)
    vocab = model.config.vocab_size
    prompts = [torch.randint(0, vocab, (n,), generator=gen).tolist() for n in PROMPT_LENS]
    responses = [torch.randint(0, vocab, (n,), generator=gen).tolist() for n in RESPONSE_LENS]
    return collate_prompt_response(prompts, responses, tok.pad_token_id)


def _run(model, path, batch, temperature):
    """Log-probs, entropy and every parameter's gradient of a weighted masked sum of the log-probs."""
    model.zero_grad(set_to_none=True)
    logp, entropy = path.forward(model, batch, temperature)  # [B, R] each
    weights = torch.randn(logp.shape, generator=torch.Generator().manual_seed(3))  # [B, R]
    (logp * weights * batch.response_mask).sum().backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    return logp.detach(), entropy, grads


def assert_close(new: torch.Tensor, ref: torch.Tensor, what: str) -> float:
    scale = max(1.0, float(ref.abs().max()))
    gap = float((new - ref).abs().max())
    assert gap <= TOL * scale, f"{what}: max |diff| {gap:.3g} over {TOL * scale:.3g}"
    return gap


@pytest.mark.parametrize("temperature", [1.0, 0.7])
@pytest.mark.parametrize("chunk", [1, 4, 5, 64])  # 1 and 4 divide R = 12; 5 does not; 64 > R
def test_chunked_equals_full_vocabulary_reference(tiny, batch, chunk, temperature):
    tok, model = tiny
    ref = _run(model, TextPolicyPath(tok, "none", 64, logit_chunk=0), batch, temperature)
    new = _run(model, TextPolicyPath(tok, "none", 64, logit_chunk=chunk), batch, temperature)
    real = batch.response_mask.bool()  # [B, R]
    assert_close(new[0][real], ref[0][real], "log-probs")
    assert_close(new[1][real], ref[1][real], "entropy")
    assert not new[0][~real].any() and not new[1][~real].any()  # padding is skipped, reads 0
    assert set(new[2]) == set(ref[2]) and "model.embed_tokens.weight" in ref[2]  # tied: also the LM head
    for name, grad in ref[2].items():
        assert float(grad.abs().max()) > 0, name
        assert_close(new[2][name], grad, f"grad {name}")


def test_no_grad_pass_equals_reference(tiny, batch):
    """The old-log-prob pass (no grad, no entropy) takes the plain chunk loop."""
    tok, model = tiny
    with torch.no_grad():
        ref, _ = TextPolicyPath(tok, "none", 64, logit_chunk=0).forward(model, batch, 0.8, with_entropy=False)
        new, ent = TextPolicyPath(tok, "none", 64, logit_chunk=5).forward(
            model, batch, 0.8, with_entropy=False
        )
    assert ent is None and not new.requires_grad
    real = batch.response_mask.bool()  # [B, R]
    assert_close(new[real], ref[real], "no-grad log-probs")


def test_banned_ids_match_index_fill_reference(tiny):
    """Banned tokens (the VL path's vision placeholders) get the same log-probs and gradients."""
    _, model = tiny
    gen = torch.Generator().manual_seed(5)
    head = output_embeddings(model)
    hidden = torch.randn(2, 7, model.config.hidden_size, generator=gen, requires_grad=True)  # [B, R, H]
    ids = torch.randint(0, model.config.vocab_size, (2, 7), generator=gen)  # [B, R]
    banned = torch.tensor([3, 11, int(ids[0, 2])])  # one sampled token is banned
    weights = torch.randn(2, 7, generator=gen)  # [B, R]

    def grads(logp):
        model.zero_grad(set_to_none=True)
        hidden.grad = None
        finite = logp.detach().abs() < 1e20  # a banned token's log-prob is ~-1e30 in both
        (logp * weights * finite).sum().backward()
        return hidden.grad.clone(), head.weight.grad.clone(), logp.detach()

    logits = head(hidden).float().index_fill(-1, banned, -1e30)  # [B, R, V]
    z = logits / 0.6
    ref_logp = torch.log_softmax(z, -1).gather(-1, ids.unsqueeze(-1)).squeeze(-1)  # [B, R]
    ref = grads(ref_logp)
    new_logp, _ = chunked_logp_and_entropy(hidden, head, ids, 0.6, chunk=3, banned_ids=banned)
    new = grads(new_logp)
    assert float(ref[2][0, 2]) < -1e29 and float(new[2][0, 2]) < -1e29
    mask = ref[2].abs() < 1e20
    assert_close(new[2][mask], ref[2][mask], "log-probs")
    assert_close(new[0], ref[0], "grad hidden")
    assert_close(new[1], ref[1], "grad LM head")
    assert float(new[1][banned].abs().max()) == 0.0  # banned logits are constants


class SavedTensorProbe:
    """Records the shapes of the tensors autograd saves for backward outside checkpointed regions."""

    def __init__(self) -> None:
        self.shapes: list[torch.Size] = []

    def __enter__(self):
        def pack(t: torch.Tensor) -> torch.Tensor:
            self.shapes.append(t.shape)
            return t

        self._ctx = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
        self._ctx.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self._ctx.__exit__(*exc)

    def vocab_wide_elements(self, vocab: int) -> int:
        """Elements of saved [B, positions, V] tensors (the LM head's weight, [H, V], is not one)."""
        return sum(math.prod(s) for s in self.shapes if len(s) == 3 and s[-1] == vocab)


def _head_calls(model) -> tuple[list[tuple[int, ...]], torch.utils.hooks.RemovableHandle]:
    """The leading (batch, positions) shape of every LM-head call's output."""
    positions: list[tuple[int, ...]] = []
    handle = output_embeddings(model).register_forward_hook(
        lambda mod, args, out: positions.append(tuple(out.shape[:-1]))
    )
    return positions, handle


def test_chunked_path_never_keeps_a_batch_by_vocabulary_tensor(tiny, batch):
    """Fails if the chunking silently stops: the reference saves [B, R, V] for backward, the chunked
    path saves nothing vocabulary-wide, and every LM-head call (forward and the backward's
    recomputation) covers at most ``chunk`` positions, real response tokens only."""
    tok, model = tiny
    vocab = model.config.vocab_size
    b, width_r = batch.response_ids.shape
    real = sum(RESPONSE_LENS)  # 21 of the B * R = 36 positions
    chunk = 5
    for logit_chunk in (0, chunk):
        model.zero_grad(set_to_none=True)
        positions, handle = _head_calls(model)
        with SavedTensorProbe() as probe:
            logp, _ = TextPolicyPath(tok, "none", 64, logit_chunk=logit_chunk).forward(model, batch, 0.7)
        forward_calls = list(positions)
        logp.sum().backward()
        handle.remove()
        saved = probe.vocab_wide_elements(vocab)
        if logit_chunk == 0:
            assert saved >= b * width_r * vocab  # the log-softmax kept for backward
            assert forward_calls == [(b, width_r + 1)]
        else:
            assert saved == 0
            sizes = [min(chunk, real - s) for s in range(0, real, chunk)]  # 5, 5, 5, 5, 1
            # the model's own head on its last position, then one call per chunk of real tokens
            assert forward_calls == [(b, 1)] + [(n,) for n in sizes]
            assert positions[len(forward_calls) :] == [(n,) for n in reversed(sizes)]  # recomputed


def test_logit_chunk_config_is_checked():
    assert load_config(None, []).train.logit_chunk == 256
    with pytest.raises(ConfigError, match="train.logit_chunk"):
        load_config(None, ["train.logit_chunk=-1"])


def test_empty_chunks_still_call_the_head_in_forward_and_backward(tiny, batch, monkeypatch):
    """Under ZeRO-3 ranks pad to the same number of LM-head calls with empty chunks (each call is
    a collective gather); an empty chunk must call the head in forward and in the recomputation."""
    tok, model = tiny
    monkeypatch.setattr(logprobs, "_zero3_partitioned", lambda module: True)
    monkeypatch.setattr(logprobs.dist, "all_reduce_max", lambda n: n + 2)  # another rank has 2 more
    ref = _run(model, TextPolicyPath(tok, "none", 64, logit_chunk=0), batch, 0.7)
    positions, handle = _head_calls(model)
    new = _run(model, TextPolicyPath(tok, "none", 64, logit_chunk=5), batch, 0.7)
    handle.remove()
    sizes = [(5,)] * 4 + [(1,), (0,), (0,)]  # 21 real tokens, then the two padding calls
    assert positions == [(len(RESPONSE_LENS), 1)] + sizes + sizes[::-1]
    real = batch.response_mask.bool()
    assert_close(new[0][real], ref[0][real], "log-probs")
    for name, grad in ref[2].items():
        assert_close(new[2][name], grad, f"grad {name}")


def test_two_ranks_with_different_chunk_counts_under_zero3(tmp_path):
    """Rank 0 needs 5 chunks, rank 1 one: the step completes (no mismatched gathers) and equals a
    single-process full-batch step through the full-vocabulary path."""
    out = tmp_path / "report.json"
    worker = REPO / "tests" / "train" / "logprobs_two_rank_worker.py"
    args = ["--model-dir", str(tiny_model_dir("qwen2")), "--out", str(out)]
    returncode, log = run_two_ranks(worker, args, timeout_s=300, hang_hint=" (mismatched ZeRO-3 gathers?)")
    assert returncode == 0 and out.exists(), log[-4000:]
    report = json.loads(out.read_text())
    assert report["param_change"] > 1e-3  # the step moved the weights...
    assert report["param_diff"] < 1e-6  # ...as the single-process full-batch step did
