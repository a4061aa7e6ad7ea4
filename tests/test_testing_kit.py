"""Tests of the public test kit itself: if these tools are wrong, every losslessness test is."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from spec_sdk.backends.base import ScoreItem, TargetModel
from spec_sdk.proposers.base import Proposer, RequestView
from spec_sdk.testing import (
    FaultyProposer,
    KVConventionError,
    OracleProposer,
    RandomProposer,
    SampledRandomProposer,
    TableTarget,
    WrongProposer,
    exact_sequence_distribution,
    greedy_next_fn,
    reference_greedy,
    tie_aware_equal,
    tiny_llama,
)
from spec_sdk.testing.strategies import drafts, prompts, sampling_params
from spec_sdk.types import Draft, SamplingParams, SpecStats

FAST = settings(max_examples=25, deadline=None)


def view(tokens: list[int], rid: str = "r0", params: SamplingParams | None = None) -> RequestView:
    return RequestView(rid, list(tokens), len(tokens), params or SamplingParams(), SpecStats())


@pytest.fixture(scope="module")
def llama():
    return tiny_llama()


# -- tiny_llama and reference_greedy ------------------------------------------------------


def test_tiny_llama_is_deterministic_and_leaves_global_rng_alone() -> None:
    state = torch.random.get_rng_state()
    a, b, c = tiny_llama(seed=3), tiny_llama(seed=3), tiny_llama(seed=4)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert not a.training and a.dtype == torch.float64
    for (name, pa), pb, pc in zip(a.named_parameters(), b.parameters(), c.parameters()):
        assert torch.equal(pa, pb), name
    assert not torch.equal(a.lm_head.weight, c.lm_head.weight)


def test_tiny_llama_greedy_is_decided_by_real_margins(llama) -> None:
    # The scaled init must keep greedy far from ties, or tie-aware checks would excuse everything.
    for seed in range(3):
        prompt = torch.randint(0, 64, (12,), generator=torch.Generator().manual_seed(seed)).tolist()
        _, margins = reference_greedy(llama, prompt, 16)
        assert min(margins) > 1e-4


def test_reference_greedy_equals_hf_generate(llama) -> None:
    for seed in range(3):
        prompt = torch.randint(0, 64, (5 + 3 * seed,), generator=torch.Generator().manual_seed(seed)).tolist()
        tokens, margins = reference_greedy(llama, prompt, 24)
        with torch.no_grad():
            out = llama.generate(torch.tensor([prompt]), do_sample=False, max_new_tokens=24, min_new_tokens=24)
        assert out[0, len(prompt) :].tolist() == tokens
        assert len(margins) == 24 and all(m >= 0 for m in margins)


def test_reference_greedy_on_table_target_is_the_table_argmax() -> None:
    target = TableTarget(vocab_size=5, order=2, seed=1)
    tokens, margins = reference_greedy(target, [1, 2], 10)
    context = [1, 2]
    for tok, margin in zip(tokens, margins):
        probs = target.next_distribution(context)
        top = torch.sort(probs.log(), descending=True).values
        assert tok == int(probs.argmax()) and margin == pytest.approx(float(top[0] - top[1]))
        context.append(tok)


def test_tie_aware_equal() -> None:
    ref, margins = [1, 2, 3, 4], [0.5, 1e-9, 0.5, 0.5]
    assert tie_aware_equal([1, 2, 3, 4], ref, margins)
    assert tie_aware_equal([1, 7, 0, 0], ref, margins)  # parted at a near-tie: allowed
    assert not tie_aware_equal([9, 2, 3, 4], ref, margins)  # parted at a real margin
    assert not tie_aware_equal([1, 2, 5, 4], ref, margins)
    assert not tie_aware_equal([1, 2, 3], ref, margins)  # a prefix is not equal
    assert not tie_aware_equal([1, 2, 3, 4, 5], ref, margins)
    assert not tie_aware_equal([1, 7, 0, 0], ref, margins, eps=1e-12)


# -- TableTarget and the KV convention ----------------------------------------------------


def test_table_target_rows_are_distributions_and_seeded() -> None:
    t = TableTarget(vocab_size=6, order=2, seed=7)
    assert isinstance(t, TargetModel)
    assert t.table.shape == (7, 7, 6) and t.table.dtype == torch.float64
    assert torch.allclose(t.table.sum(-1), torch.ones(7, 7, dtype=torch.float64))
    assert torch.equal(t.table, TableTarget(vocab_size=6, order=2, seed=7).table)
    assert not torch.equal(t.table, TableTarget(vocab_size=6, order=2, seed=8).table)
    # Short contexts see the virtual "no token" padding, longer ones only their last tokens.
    assert torch.equal(t.next_distribution([3]), t.table[6, 3])
    assert torch.equal(t.next_distribution([0, 1, 2, 3]), t.table[2, 3])


def test_table_target_chain_steps_follow_the_kv_convention() -> None:
    t = TableTarget(vocab_size=4, order=2, seed=0)
    t.add("a", [1, 2, 3])
    assert t.cached_tokens("a") == (1, 2)
    (res,) = t.score([ScoreItem("a", 3, Draft([0, 1, 2]))])
    ctx = [1, 2, 3]
    expected = [t.next_distribution(ctx + [0, 1, 2][:i]).log() for i in range(4)]
    assert torch.equal(res.logits, torch.stack(expected)) and res.hidden is None
    t.commit("a", [0, 1])  # two accepted; the verifier then adds, say, token 3
    assert t.cached_tokens("a") == (1, 2, 3, 0, 1)
    (res,) = t.score([ScoreItem("a", 3, None, want_hidden=True)])
    assert torch.equal(res.logits[0], t.next_distribution([1, 2, 3, 0, 1, 3]).log())
    assert torch.equal(res.hidden, res.logits)
    t.commit("a", [])
    assert t.cached_tokens("a") == (1, 2, 3, 0, 1, 3)
    assert t.score_calls == 2 and t.nodes_scored == 5
    t.remove("a")
    assert t.active_requests == frozenset()


def test_table_target_tree_draft_and_branch_commit() -> None:
    t = TableTarget(vocab_size=4, order=2, seed=2)
    t.add("a", [0])
    # root -> 0:[1] -> 1:[2]; root -> 2:[3] -> 3:[0]
    tree = Draft([1, 2, 3, 0], parents=[-1, 0, -1, 2])
    (res,) = t.score([ScoreItem("a", 0, tree)])
    for node, ctx in enumerate([[0, 1], [0, 1, 2], [0, 3], [0, 3, 0]]):
        assert torch.equal(res.logits[node + 1], t.next_distribution(ctx).log())
    with pytest.raises(KVConventionError):
        t.commit("a", [3])  # node 3 is not a child of the root
    t.commit("a", [2, 3])
    assert t.cached_tokens("a") == (0, 3, 0)


@given(
    prompt=prompts(5, max_len=8),
    steps=st.lists(st.tuples(drafts(5, 4, min_len=0, with_probs=False), st.integers(0, 4), st.integers(0, 4))),
)
@FAST
def test_table_target_logits_always_match_the_full_context(prompt, steps) -> None:
    t = TableTarget(vocab_size=5, order=2, seed=3)
    t.add("a", prompt)
    t.add("b", [4, 4])  # an unrelated request in the same batches must not interfere
    history, last, other_last = list(prompt[:-1]), prompt[-1], 4
    for draft, keep, bonus in steps:
        logits = t.score([ScoreItem("a", last, draft), ScoreItem("b", other_last, None)])[0].logits
        assert logits.shape == (1 + len(draft), 5)
        ctx = history + [last]
        for i in range(len(draft) + 1):
            assert torch.equal(logits[i], t.next_distribution(ctx + list(draft.tokens[:i])).log())
        keep = min(keep, len(draft))
        t.commit("a", list(range(keep)))
        t.commit("b", [])
        history = ctx + list(draft.tokens[:keep])
        last = bonus
        assert t.cached_tokens("a") == tuple(history)


@pytest.mark.parametrize(
    "misuse",
    [
        "score_unknown",
        "commit_unknown",
        "remove_unknown",
        "add_twice",
        "add_empty",
        "add_out_of_vocab",
        "first_feed_not_prompt_last",
        "score_twice",
        "commit_without_score",
        "commit_path_outside_draft",
        "commit_path_not_a_path",
        "draft_out_of_vocab",
        "duplicate_in_batch",
        "over_max_context",
    ],
)
def test_table_target_rejects_misuse(misuse: str) -> None:
    t = TableTarget(vocab_size=4, seed=0, max_context=6)
    t.add("a", [1, 2])
    actions = {
        "score_unknown": lambda: t.score([ScoreItem("zz", 0)]),
        "commit_unknown": lambda: t.commit("zz", []),
        "remove_unknown": lambda: t.remove("zz"),
        "add_twice": lambda: t.add("a", [1]),
        "add_empty": lambda: t.add("b", []),
        "add_out_of_vocab": lambda: t.add("b", [1, 4]),
        "first_feed_not_prompt_last": lambda: t.score([ScoreItem("a", 1)]),
        "score_twice": lambda: (t.score([ScoreItem("a", 2)]), t.score([ScoreItem("a", 2)])),
        "commit_without_score": lambda: t.commit("a", []),
        "commit_path_outside_draft": lambda: (t.score([ScoreItem("a", 2, Draft([0, 1]))]), t.commit("a", [0, 1, 2])),
        "commit_path_not_a_path": lambda: (t.score([ScoreItem("a", 2, Draft([0, 1]))]), t.commit("a", [1])),
        "draft_out_of_vocab": lambda: t.score([ScoreItem("a", 2, Draft([0, -1]))]),
        "duplicate_in_batch": lambda: t.score([ScoreItem("a", 2), ScoreItem("a", 2)]),
        "over_max_context": lambda: t.score([ScoreItem("a", 2, Draft([0, 0, 0, 0, 0]))]),
    }
    with pytest.raises(KVConventionError):
        actions[misuse]()


def test_table_target_rejected_batch_changes_nothing() -> None:
    t = TableTarget(vocab_size=4, seed=0)
    t.add("a", [1, 2])
    with pytest.raises(KVConventionError):
        t.score([ScoreItem("a", 2, Draft([0])), ScoreItem("zz", 0)])
    assert t.score_calls == 0
    t.score([ScoreItem("a", 2, Draft([0]))])  # "a" was not left half-scored
    t.commit("a", [0])
    assert t.cached_tokens("a") == (1, 2, 0)


# -- exact_sequence_distribution ----------------------------------------------------------


@given(params=sampling_params(greedy=False))
@settings(max_examples=15, deadline=None)
def test_exact_distribution_sums_to_one(params: SamplingParams) -> None:
    target = TableTarget(vocab_size=4, order=2, seed=5)
    dist = exact_sequence_distribution(target, [0, 1], 3, params)
    assert math.isclose(sum(dist.values()), 1.0, abs_tol=1e-12)
    assert all(len(s) == 3 and p > 0 for s, p in dist.items())


def test_exact_distribution_plain_sampling_is_the_table_product() -> None:
    target = TableTarget(vocab_size=3, order=1, seed=1)
    dist = exact_sequence_distribution(target, [2], 2, SamplingParams(temperature=1.0))
    assert len(dist) == 9
    for (a, b), p in dist.items():
        assert p == pytest.approx(float(target.table[2, a] * target.table[a, b]), rel=1e-12)


def test_exact_distribution_greedy_is_the_reference() -> None:
    target = TableTarget(vocab_size=5, order=2, seed=4)
    dist = exact_sequence_distribution(target, [1, 3], 4, SamplingParams(top_k=2))
    assert dist == {tuple(reference_greedy(target, [1, 3], 4)[0]): 1.0}


def _sample_sequences(target: TableTarget, prompt: list[int], length: int, params: SamplingParams, n: int):
    """Brute force: draw n sequences step by step, grouping rows that share a context tail."""
    from spec_sdk.verify.warp import warp_probs

    rng = np.random.default_rng(1234)
    seqs = np.zeros((n, length), dtype=np.int64)
    for step in range(length):
        tails = [tuple((prompt + row.tolist())[-target.order :]) for row in seqs[:, :step]]
        for tail in set(tails):
            rows = [i for i, t in enumerate(tails) if t == tail]
            probs = warp_probs(target.next_distribution(list(tail)).log()[None], params)[0].numpy()
            seqs[rows, step] = rng.choice(target.vocab_size, size=len(rows), p=probs / probs.sum())
    return [tuple(s) for s in seqs.tolist()]


def _chi_square_p(observed: dict, expected_probs: dict, n: int) -> float:
    """Pearson chi-square p-value, cells with expected count < 5 pooled into one."""
    obs, exp, pooled_obs, pooled_exp = [], [], 0, 0.0
    for seq, p in expected_probs.items():
        if n * p < 5:
            pooled_obs, pooled_exp = pooled_obs + observed.get(seq, 0), pooled_exp + n * p
        else:
            obs.append(observed.get(seq, 0))
            exp.append(n * p)
    assert sum(observed.values()) == sum(observed.get(s, 0) for s in expected_probs)  # no impossible draws
    if pooled_exp > 0:
        obs.append(pooled_obs)
        exp.append(pooled_exp)
    return float(stats.chisquare(obs, np.array(exp) * (sum(obs) / sum(exp))).pvalue)


@pytest.mark.parametrize(
    "params",
    [
        SamplingParams(temperature=0.8, top_p=0.9),
        SamplingParams(temperature=1.3, top_k=2, min_p=0.05),
    ],
)
def test_exact_distribution_matches_brute_force_sampling(params: SamplingParams) -> None:
    target = TableTarget(vocab_size=3, order=2, seed=6)
    n = 20_000
    exact = exact_sequence_distribution(target, [0], 3, params)
    samples = _sample_sequences(target, [0], 3, params, n)
    counts: dict = {}
    for s in samples:
        counts[s] = counts.get(s, 0) + 1
    assert _chi_square_p(counts, exact, n) > 1e-3
    # The same test must notice a wrong distribution (here: the unwarped one).
    assert _chi_square_p(counts, exact_sequence_distribution(target, [0], 3, SamplingParams(temperature=1.0)), n) < 1e-6


# -- adversarial proposers ----------------------------------------------------------------


def test_proposers_satisfy_the_protocol() -> None:
    nxt = greedy_next_fn(TableTarget())
    for p in [
        RandomProposer(4),
        SampledRandomProposer(4),
        OracleProposer(nxt),
        WrongProposer(nxt, 4),
        FaultyProposer("raise"),
    ]:
        assert isinstance(p, Proposer)
        assert p.needs_hidden_states is False and p.name


def test_random_proposer_is_deterministic_and_in_vocab() -> None:
    p, q = RandomProposer(7, seed=1), RandomProposer(7, seed=1)
    reqs = [view([1, 2, 3], "a"), view([4], "b")]
    for r in reqs:
        p.start(r)
        q.start(r)
    d = p.propose(reqs, [5, 0])
    assert d[1] is None and len(d[0]) == 5 and d[0].probs is None
    assert all(0 <= t < 7 for t in d[0].tokens)
    # Same (seed, request, position) -> same draft, whatever the batch order.
    assert q.propose(reqs[::-1], [0, 5])[1].tokens == d[0].tokens
    assert len(RandomProposer(7, max_len=2).propose([reqs[0]], [5])[0]) == 2
    assert p.calls["propose"] == 1 and p.proposed_tokens == 5 and p.protocol_errors == []


def test_recording_notes_protocol_breaches() -> None:
    p = RandomProposer(4)
    r = view([1])
    p.propose([r], [2])  # never started
    p.start(r)
    p.observe(r, [1, 2], None)
    p.finish(r)
    p.finish(r)  # twice
    assert len(p.protocol_errors) == 2
    assert p.observed["r0"] == [1, 2] and p.active == set()
    assert dict(p.calls) == {"propose": 1, "start": 1, "observe": 1, "finish": 2}


def _pit(q: np.ndarray, tok: int, v: float) -> float:
    """Randomised probability integral transform: Uniform(0, 1) exactly when tok ~ q."""
    return float(q[:tok].sum() + v * q[tok])


def test_sampled_random_tokens_are_drawn_from_their_q() -> None:
    p = SampledRandomProposer(6, seed=11)
    r = view([0, 1])
    p.start(r)
    pairs = []
    for _ in range(300):
        (d,) = p.propose([r], [10])
        assert d.probs is not None and d.probs.shape == (10, 6) and d.probs.dtype == torch.float64
        assert torch.allclose(d.probs.sum(-1), torch.ones(10, dtype=torch.float64), atol=1e-12)
        assert bool((d.probs >= 0).all())
        pairs += [(d.probs[i].numpy(), tok) for i, tok in enumerate(d.tokens)]
    assert all(q[tok] > 0 for q, tok in pairs)
    assert any((q == 0).any() for q, _ in pairs)  # sparse rows do occur
    rng = np.random.default_rng(0)
    u = [_pit(q, tok, rng.random()) for q, tok in pairs]
    assert stats.kstest(u, "uniform").pvalue > 1e-3
    # Power check: pairing each token with a different row's q must fail.
    shifted = [_pit(pairs[i - 1][0], pairs[i][1], rng.random()) for i in range(len(pairs))]
    assert stats.kstest(shifted, "uniform").pvalue < 1e-6


def test_sampled_random_same_seed_same_draws_fresh_otherwise() -> None:
    a, b = SampledRandomProposer(5, seed=3), SampledRandomProposer(5, seed=3)
    r = view([1])
    da, db = a.propose([r], [4])[0], b.propose([r], [4])[0]
    assert da.tokens == db.tokens and torch.equal(da.probs, db.probs)
    # Same context again: a fresh q (the losslessness requirement documented on the class).
    assert not torch.equal(a.propose([r], [4])[0].probs, da.probs)


@pytest.mark.parametrize("which", ["table", "llama"])
def test_oracle_is_greedy_and_wrong_never_is(which: str, llama) -> None:
    model = TableTarget(vocab_size=5, order=2, seed=9) if which == "table" else llama
    vocab = 5 if which == "table" else 64
    nxt = greedy_next_fn(model)
    oracle, wrong = OracleProposer(nxt), WrongProposer(nxt, vocab, seed=2)
    for prompt in ([1], [3, 4, 0, 2]):
        r = view(prompt)
        (d,) = oracle.propose([r], [6])
        assert list(d.tokens) == reference_greedy(model, prompt, 6)[0]
        (w,) = wrong.propose([r], [6])
        assert len(w) == 6 and all(0 <= t < vocab for t in w.tokens)
        for i, tok in enumerate(w.tokens):
            assert tok != nxt(prompt + list(w.tokens[:i]))
    assert oracle.calls["propose"] == 2 and wrong.proposed_tokens == 12


def test_faulty_proposer_modes() -> None:
    r = view([1, 2])
    with pytest.raises(RuntimeError):
        FaultyProposer("raise").propose([r], [3])
    (d,) = FaultyProposer("out_of_vocab", vocab_size=8).propose([r], [3])
    assert d.tokens == (8, -1, -1)
    (d,) = FaultyProposer("too_long", vocab_size=8).propose([r], [3])
    assert len(d) > 3
    (d,) = FaultyProposer("bad_probs", vocab_size=8).propose([r], [3])
    assert d.probs.shape == (3, 8) and not bool(torch.isfinite(d.probs).all())
    assert bool((torch.nan_to_num(d.probs) < 0).any())
    with pytest.raises(ValueError):
        FaultyProposer("sometimes")


# -- strategies ---------------------------------------------------------------------------


@given(st.data())
@FAST
def test_sampling_params_strategy(data) -> None:
    assert data.draw(sampling_params(greedy=True)).greedy
    params = data.draw(sampling_params(greedy=False, max_new_tokens=7))
    assert not params.greedy and params.max_new_tokens == 7
    assert isinstance(data.draw(sampling_params()), SamplingParams)


@given(prompts(9, min_len=3, max_len=12))
@FAST
def test_prompts_strategy(prompt: list[int]) -> None:
    assert 3 <= len(prompt) <= 12 and all(0 <= t < 9 for t in prompt)


def test_prompts_strategy_makes_repetitive_prompts() -> None:
    from hypothesis import find

    # Some prompt must repeat a 3-gram, so n-gram proposers have something to match.
    def has_repeat(p: list[int]) -> bool:
        grams = [tuple(p[i : i + 3]) for i in range(len(p) - 2)]
        return len(set(grams)) < len(grams)

    assert has_repeat(find(prompts(50, min_len=12, max_len=32), has_repeat))


@given(drafts(6, 5, with_probs=True))
@FAST
def test_drafts_strategy(draft: Draft) -> None:
    assert 1 <= len(draft) <= 5 and draft.is_chain
    assert draft.probs is not None and draft.probs.shape == (len(draft), 6)
    assert torch.allclose(draft.probs.sum(-1), torch.ones(len(draft), dtype=torch.float64))
    assert all(float(draft.probs[i, t]) > 0 for i, t in enumerate(draft.tokens))
