"""Speculative decoding through the native backend is lossless: greedy output equals target-only
greedy decoding of the transformers model (tie-aware) for honest, adversarial and tree proposers
with concurrent requests; sampled whole output sequences follow the exactly enumerated target
distribution (chi-square), for chain and tree drafts."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Sequence

import anyio
import attrs
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from spec_sdk import Draft, SamplingParams
from spec_sdk.backends.native import NativeBackend
from spec_sdk.proposers.base import RequestView
from spec_sdk.proposers.ngram import NgramProposer
from spec_sdk.testing import (
    OracleProposer,
    RandomProposer,
    RecordingProposer,
    SampledRandomProposer,
    WrongProposer,
    chi_square,
    exact_sequence_distribution,
    greedy_next_fn,
    reference_greedy,
    run_concurrently,
    tie_aware_equal,
    tiny_llama,
)
from spec_sdk.testing.strategies import prompts
from spec_sdk.verify.warp import warp_probs


class TreeProposer(RecordingProposer):
    """Random trees that hide the target's greedy token among wrong siblings at each level."""

    name = "tree"

    def __init__(self, next_token, vocab_size: int, seed: int = 0) -> None:
        super().__init__()
        self.next_token = next_token
        self.vocab_size = vocab_size
        self.seed = seed

    def _draft(self, req: RequestView, budget: int) -> Draft | None:
        rng = random.Random(f"{self.seed}:{req.id}:{len(req.tokens)}")
        context = list(req.tokens[:])
        tokens: list[int] = []
        parents: list[int] = []
        parent = -1
        while len(tokens) < budget:
            right = int(self.next_token(context)) if rng.random() < 0.8 else rng.randrange(self.vocab_size)
            width = min(rng.randint(1, 3), budget - len(tokens))
            slot = rng.randrange(width)
            for s in range(width):
                tokens.append(right if s == slot else rng.randrange(self.vocab_size))
                parents.append(parent)
            parent = len(tokens) - width + slot
            context.append(right)
        return Draft(tokens=tokens, parents=parents, score=float(len(tokens)), source=self.name)


PROPOSERS = {
    "ngram": lambda model, v: NgramProposer(min_n=1, max_n=3),
    "random": lambda model, v: RandomProposer(v, seed=3),
    "sampled-random": lambda model, v: SampledRandomProposer(v, seed=3),
    "oracle": lambda model, v: OracleProposer(greedy_next_fn(model)),
    "wrong": lambda model, v: WrongProposer(greedy_next_fn(model), v),
    "tree": lambda model, v: TreeProposer(greedy_next_fn(model), v, seed=1),
}


@pytest.fixture(scope="module")
def native(tiny_model):
    return NativeBackend(tiny_model, max_slots=8)


@pytest.mark.parametrize("kind", sorted(PROPOSERS))
def test_greedy_equals_target_only(kind, tiny_model, native):
    vocab = native.vocab_size
    seen = {"drafted": 0, "accepted": 0, "cases": 0}

    @settings(max_examples=25)
    @given(batch=st.lists(prompts(vocab, max_len=24), min_size=1, max_size=6), n_new=st.integers(1, 20),
           k=st.integers(1, 6))
    def case(batch, n_new, k):
        proposer = PROPOSERS[kind](tiny_model, vocab)
        params = [SamplingParams(max_new_tokens=n_new)] * len(batch)
        done, metrics = anyio.run(run_concurrently, native, [proposer], batch, params, k)
        for prompt, completion in zip(batch, done, strict=True):
            ref, margins = reference_greedy(tiny_model, prompt, n_new)
            assert tie_aware_equal(list(completion.token_ids), ref, margins), (prompt, completion.token_ids, ref)
        assert getattr(proposer, "protocol_errors", []) == []
        assert len(native) == 0
        seen["cases"] += 1
        seen["drafted"] += metrics.totals.drafted
        seen["accepted"] += metrics.totals.accepted

    case()
    assert seen["cases"] >= 25 and seen["drafted"] > 0
    if kind == "oracle":
        assert seen["accepted"] == seen["drafted"]
    if kind == "wrong":
        assert seen["accepted"] == 0


def test_check_lossless_style_float32_and_float64():
    """check_lossless's greedy check with the native backend in place of hf: hypothesis batches on
    a float64 and a float32 tiny Llama (float32 outputs compared tie-aware with eps 1e-4)."""
    for dtype, eps in ((torch.float64, 1e-6), (torch.float32, 1e-4)):
        model = tiny_llama(seed=7, dtype=dtype)
        backend = NativeBackend(model, max_slots=6)
        totals = {"drafted": 0}

        @settings(max_examples=15, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        @given(batch=st.lists(prompts(64, max_len=24), min_size=1, max_size=6), n_new=st.integers(1, 16))
        def case(batch, n_new):
            params = [SamplingParams(max_new_tokens=n_new)] * len(batch)
            done, metrics = anyio.run(run_concurrently, backend, [NgramProposer(min_n=1, max_n=2)], batch, params, 4)
            totals["drafted"] += metrics.totals.drafted
            for prompt, completion in zip(batch, done, strict=True):
                ref, margins = reference_greedy(model, prompt, n_new)
                assert tie_aware_equal(list(completion.token_ids), ref, margins, eps=eps)

        case()
        assert totals["drafted"] > 0


# --- sampling: whole sequences follow the target's distribution -------------------------------


@attrs.define
class _ModelTable:
    """`exact_sequence_distribution` reads a target through these two methods; here they run
    the transformers model itself (no cache), so the reference shares nothing with our backend."""

    model: object
    vocab_size: int

    def _logits(self, context: Sequence[int]) -> torch.Tensor:
        with torch.inference_mode():
            return self.model(torch.tensor([list(context)]), use_cache=False).logits[0, -1]  # type: ignore[operator]

    def next_distribution(self, context: Sequence[int]) -> torch.Tensor:
        return self._logits(context).softmax(-1)


class RandomTreeProposer(RecordingProposer):
    name = "random_tree"

    def __init__(self, vocab_size: int, seed: int = 0) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.seed = seed

    def _draft(self, req: RequestView, budget: int) -> Draft | None:
        rng = random.Random(f"{self.seed}:{req.id}:{len(req.tokens)}")
        n = rng.randint(1, budget)
        return Draft(tokens=[rng.randrange(self.vocab_size) for _ in range(n)],
                     parents=[rng.randrange(-1, i) for i in range(n)], score=float(n), source=self.name)


N = 3000
PROMPT = [1, 2, 3]
SAMPLED = {
    "chain-q": lambda v: SampledRandomProposer(v, seed=5),
    "tree": lambda v: RandomTreeProposer(v, seed=5),
}
PARAMS = {
    "t=1": SamplingParams(temperature=1.0, max_new_tokens=3),
    "t=0.8,top_k=3,top_p=0.9": SamplingParams(temperature=0.8, top_k=3, top_p=0.9, max_new_tokens=3),
}


@pytest.fixture(scope="module")
def five_token_llama():
    return tiny_llama(vocab_size=5, hidden_size=16, num_heads=4, num_kv_heads=2, seed=11, initializer_range=0.3)


@pytest.mark.parametrize("kind", sorted(SAMPLED))
@pytest.mark.parametrize("pname", sorted(PARAMS))
def test_sampled_sequences_follow_target_distribution(kind, pname, five_token_llama):
    params = PARAMS[pname]
    exact = exact_sequence_distribution(_ModelTable(five_token_llama, 5), PROMPT, params.max_new_tokens, params)
    assert len(exact) > 5  # not a near-deterministic target: the test has power
    backend = NativeBackend(five_token_llama, max_slots=64, max_len=16)
    proposer = SAMPLED[kind](5)
    all_params = [attrs.evolve(params, seed=i) for i in range(N)]
    done, metrics = anyio.run(run_concurrently, backend, [proposer], [PROMPT] * N, all_params, 3)
    counts = Counter(tuple(c.token_ids) for c in done)
    stat, dof, p = chi_square(counts, exact, N)
    assert metrics.totals.accepted > 0 and proposer.protocol_errors == []
    assert p > 1e-4, f"chi2={stat:.1f} dof={dof} p={p:.2e}"
    assert len(backend) == 0


def test_warped_rows_of_the_exact_reference_are_the_engines(five_token_llama):
    """The reference distribution warps the same logits the backend scores (a sanity check that
    the chi-square above compares like with like)."""
    backend = NativeBackend(five_token_llama, max_slots=1, max_len=16)
    from spec_sdk.backends.base import ScoreItem

    backend.add("w", PROMPT)
    (res,) = backend.score([ScoreItem("w", PROMPT[-1])])
    params = PARAMS["t=1"]
    ref = warp_probs(_ModelTable(five_token_llama, 5)._logits(PROMPT)[None], params)
    torch.testing.assert_close(warp_probs(res.logits, params), ref, rtol=1e-9, atol=1e-9)
