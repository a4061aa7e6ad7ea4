"""Greedy speculative output equals target-only greedy decoding, for every proposer we ship
and for adversarial ones (random, always wrong, oracle), with concurrent requests."""

from __future__ import annotations

import anyio
import pytest
from conftest import ENGINE_EXAMPLES
from hypothesis import given, settings
from hypothesis import strategies as st

from spec_sdk import HFBackend, SamplingParams
from spec_sdk.proposers.ngram import NgramProposer
from spec_sdk.testing import (
    OracleProposer,
    RandomProposer,
    SampledRandomProposer,
    TableTarget,
    WrongProposer,
    greedy_next_fn,
    reference_greedy,
    run_concurrently,
    tie_aware_equal,
)
from spec_sdk.testing.strategies import prompts

PROPOSERS = {
    "ngram": lambda model, v: NgramProposer(min_n=1, max_n=3),
    "random": lambda model, v: RandomProposer(v, seed=3),
    "sampled-random": lambda model, v: SampledRandomProposer(v, seed=3),
    "oracle": lambda model, v: OracleProposer(greedy_next_fn(model)),
    "wrong": lambda model, v: WrongProposer(greedy_next_fn(model), v),
}


@pytest.fixture(scope="module")
def backend(tiny_model):
    return HFBackend(tiny_model)


@pytest.mark.parametrize("kind", sorted(PROPOSERS))
def test_greedy_equals_target_only(kind, tiny_model, backend):
    vocab = backend.vocab_size
    seen = {"drafted": 0, "accepted": 0, "cases": 0}

    @settings(max_examples=ENGINE_EXAMPLES)
    @given(
        batch=st.lists(prompts(vocab, max_len=24), min_size=1, max_size=5),
        n_new=st.integers(1, 20),
        k=st.integers(1, 6),
    )
    def case(batch, n_new, k):
        proposer = PROPOSERS[kind](tiny_model, vocab)
        params = [SamplingParams(max_new_tokens=n_new)] * len(batch)
        done, metrics = anyio.run(run_concurrently, backend, [proposer], batch, params, k)
        for prompt, completion in zip(batch, done, strict=True):
            ref, margins = reference_greedy(tiny_model, prompt, n_new)
            assert tie_aware_equal(list(completion.token_ids), ref, margins), (prompt, completion.token_ids, ref)
        assert getattr(proposer, "protocol_errors", []) == []
        assert len(backend) == 0  # every request's KV cache was freed
        seen["cases"] += 1
        seen["drafted"] += metrics.totals.drafted
        seen["accepted"] += metrics.totals.accepted

    case()
    assert seen["cases"] >= ENGINE_EXAMPLES  # hypothesis really generated the cases we count on
    assert seen["drafted"] > 0, "the proposer never drafted: the test proved nothing"
    if kind == "oracle":
        assert seen["accepted"] == seen["drafted"]
    if kind == "wrong":
        assert seen["accepted"] == 0


@given(prompt=prompts(6, max_len=12), n_new=st.integers(1, 30), order=st.sampled_from([1, 2]))
@settings(max_examples=40)
def test_greedy_table_target_with_oracle_and_ngram(prompt, n_new, order):
    """The table target checks the KV convention itself; both proposers must keep it."""
    target = TableTarget(vocab_size=6, order=order, seed=len(prompt))
    ref, margins = reference_greedy(target, prompt, n_new)
    for proposer in (OracleProposer(greedy_next_fn(target)), NgramProposer()):
        params = [SamplingParams(max_new_tokens=n_new)]
        (done,), _ = anyio.run(run_concurrently, target, [proposer], [prompt], params, 4)
        assert tie_aware_equal(list(done.token_ids), ref, margins)
    assert not target.active_requests
