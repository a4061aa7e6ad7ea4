"""The hf backend keeps its KV cache exactly in step with the accepted tokens."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spec_sdk import Draft, HFBackend, InvalidRequestError
from spec_sdk.backends.base import ScoreItem


@pytest.fixture(scope="module")
def backend(tiny_model):
    return HFBackend(tiny_model)


def _full_forward(model, tokens):
    with torch.inference_mode():
        out = model(torch.tensor([tokens]), use_cache=False, output_hidden_states=True)
    return out.logits[0], out.hidden_states[-1][0]


@settings(max_examples=40)
@given(
    prompt=st.lists(st.integers(0, 63), min_size=1, max_size=12),
    steps=st.lists(st.tuples(st.lists(st.integers(0, 63), max_size=5), st.integers(0, 5)), min_size=1, max_size=6),
)
def test_score_commit_matches_full_forward(backend, tiny_model, prompt, steps):
    rid = "r"
    backend.add(rid, prompt)
    seq = list(prompt)
    try:
        for draft_tokens, accept in steps:
            accept = min(accept, len(draft_tokens))
            draft = Draft(tokens=draft_tokens) if draft_tokens else None
            (res,) = backend.score([ScoreItem(rid, seq[-1], draft, want_hidden=True)])
            logits, hidden = _full_forward(tiny_model, seq + draft_tokens)
            n = 1 + len(draft_tokens)
            torch.testing.assert_close(res.logits, logits[-n:], rtol=1e-9, atol=1e-9)
            torch.testing.assert_close(res.hidden, hidden[-n:], rtol=1e-9, atol=1e-9)
            backend.commit(rid, list(range(accept)))
            seq += draft_tokens[:accept] + [int(logits[len(seq) - 1 + accept].argmax())]
            assert backend.cached_length(rid) == len(seq) - 1
    finally:
        backend.remove(rid)
    assert len(backend) == 0


def test_misuse_is_refused(backend):
    backend.add("a", [1, 2, 3])
    try:
        with pytest.raises(InvalidRequestError):
            backend.add("a", [1])
        backend.score([ScoreItem("a", 3, Draft(tokens=[4, 5]))])
        with pytest.raises(RuntimeError):
            backend.score([ScoreItem("a", 3)])
        with pytest.raises(ValueError):
            backend.commit("a", [1])  # not a prefix
    finally:
        backend.remove("a")
    with pytest.raises(InvalidRequestError):
        backend.add("b", [])


def test_loads_from_a_local_path(tmp_path, tiny_model):
    tiny_model.save_pretrained(tmp_path)
    loaded = HFBackend(tmp_path)
    assert loaded.vocab_size == 64 and loaded.max_context == tiny_model.config.max_position_embeddings
