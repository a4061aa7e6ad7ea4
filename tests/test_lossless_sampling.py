"""Sampled speculative output follows the target's distribution exactly: whole output
sequences from thousands of seeded requests, against the enumerated target distribution."""

from __future__ import annotations

from collections import Counter

import anyio
import attrs
import pytest

import spec_sdk.verify.chain as chain
from spec_sdk import SamplingParams
from spec_sdk.proposers.ngram import NgramProposer
from spec_sdk.testing import (
    OracleProposer,
    RandomProposer,
    SampledRandomProposer,
    TableTarget,
    WrongProposer,
    chi_square,
    exact_sequence_distribution,
    greedy_next_fn,
    run_concurrently,
)

N = 3000
PROMPT = [1, 2, 3]

PARAMS = {
    "t=1": SamplingParams(temperature=1.0, max_new_tokens=3),
    "t=0.7,top_k=3": SamplingParams(temperature=0.7, top_k=3, max_new_tokens=3),
    "t=1.3,top_p=0.8": SamplingParams(temperature=1.3, top_p=0.8, max_new_tokens=3),
    "t=0.9,min_p=0.1": SamplingParams(temperature=0.9, min_p=0.1, max_new_tokens=3),
}

PROPOSERS = {
    "sampled-random": lambda t: SampledRandomProposer(t.vocab_size, seed=11),
    "random": lambda t: RandomProposer(t.vocab_size, seed=11),
    "ngram": lambda t: NgramProposer(min_n=1, max_n=2),
    "oracle": lambda t: OracleProposer(greedy_next_fn(t)),
    "wrong": lambda t: WrongProposer(greedy_next_fn(t), t.vocab_size),
}


def _sample(target, proposer, params, n=N, seed=0):
    all_params = [attrs.evolve(params, seed=seed * 100_003 + i) for i in range(n)]
    done, metrics = anyio.run(run_concurrently, target, [proposer], [PROMPT] * n, all_params, 3)
    return Counter(tuple(c.token_ids) for c in done), metrics


@pytest.mark.parametrize("kind", sorted(PROPOSERS))
@pytest.mark.parametrize("pname", sorted(PARAMS))
def test_sampled_sequences_follow_target_distribution(kind, pname):
    target = TableTarget(vocab_size=5, order=2, seed=3)
    params = PARAMS[pname]
    exact = exact_sequence_distribution(target, PROMPT, params.max_new_tokens, params)
    counts, metrics = _sample(target, PROPOSERS[kind](target), params)
    stat, dof, p = chi_square(counts, exact, N)
    assert metrics.totals.drafted > 0
    assert p > 1e-4, f"chi2={stat:.1f} dof={dof} p={p:.2e}"
    assert not target.active_requests


def test_chi_square_catches_a_biased_verifier(monkeypatch):
    """Power check: accept every draft token outright (the classic q-mismatch bug) and the
    same test must fail."""
    monkeypatch.setattr(chain, "acceptance_probs", lambda p, q, tokens: p.new_ones(tokens.shape[0]))
    target = TableTarget(vocab_size=5, order=2, seed=3)
    params = PARAMS["t=1"]
    exact = exact_sequence_distribution(target, PROMPT, params.max_new_tokens, params)
    counts, _ = _sample(target, SampledRandomProposer(target.vocab_size, seed=11), params)
    _, _, p = chi_square(counts, exact, N)
    assert p < 1e-6
