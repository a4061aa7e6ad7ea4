"""SuffixProposer and its trie: exact counts against a brute-force scan, bounded cache under
arbitrary request streams, cost per step independent of context and cache size, and
lossless decoding (greedy and sampled) with one proposer -- one global cache -- shared by
concurrent requests and successive engine runs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import anyio
import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spec_sdk import HFBackend, SamplingParams
from spec_sdk.errors import ConfigError
from spec_sdk.proposers.base import Proposer, RequestView
from spec_sdk.proposers.registry import create
from spec_sdk.proposers.suffix import SuffixProposer
from spec_sdk.proposers.suffix_tree import MASK, ROOT, SHIFT, CSuffixTree, SuffixTree
from spec_sdk.testing import (
    TableTarget,
    check_lossless,
    chi_square,
    exact_sequence_distribution,
    reference_greedy,
    run_concurrently,
    tie_aware_equal,
)
from spec_sdk.testing.strategies import prompts
from spec_sdk.testing.suffix import check_trie as check
from spec_sdk.testing.suffix import wide_nodes_from
from spec_sdk.types import SpecStats


# The proposer's default ("auto") is the compiled trie where it is built; the property tests
# below run both.
BUILT_CORES = ["python"] if CSuffixTree is None else ["c", "python"]


def view(tokens: list[int], rid: str = "r", prompt_len: int | None = None) -> RequestView:
    return RequestView(rid, tokens, len(tokens) if prompt_len is None else prompt_len, SamplingParams(), SpecStats())


# -- reading the trie from outside (O(len(context)) walks; the trie itself never searches) ----
def find(trie: SuffixTree, context: Sequence[int]) -> tuple[int, int] | None:
    """Where `context` lives: (node id, -1) if explicit, (leaf edge, tokens past the leaf) if
    inside a leaf's chain, None if it does not occur (or is longer than max_depth)."""
    if len(context) > trie.max_depth:
        return None
    node = ROOT
    for i, tok in enumerate(context):
        c = trie._edges(node).get(tok)
        if c is None:
            return None
        if c < 0:
            v = ~c
            seq, pos = trie._seqs[v >> SHIFT], v & MASK
            rest = list(context[i + 1 :])
            return (c, len(rest)) if list(seq[pos + 1 : pos + 1 + len(rest)]) == rest else None
        node = c
    return node, -1


def count(trie: SuffixTree, context: Sequence[int]) -> int:
    where = find(trie, context)
    if where is None:
        return 0
    return trie._count[where[0]] if where[1] < 0 else 1


def continuations(trie: SuffixTree, context: Sequence[int]) -> dict[int, int]:
    """Token -> how often it followed `context` (within max_depth)."""
    where = find(trie, context)
    if where is None or len(context) >= trie.max_depth:
        return {}
    code, offset = where
    if offset < 0:
        return {t: (trie._count[c] if c >= 0 else 1) for t, c in trie._edges(code).items()}
    v = ~code
    seq, pos = trie._seqs[v >> SHIFT], (v & MASK) + offset
    return {seq[pos + 1]: 1} if pos + 1 < len(seq) else {}


# -- the brute-force specification -----------------------------------------------------------
def naive_counts(seqs: list[list[int]], depth: int) -> tuple[Counter[tuple[int, ...]], dict[tuple[int, ...], Counter[int]]]:
    """Occurrences of every string of <= depth tokens, and what followed each (the string plus
    its next token must fit in depth), by scanning every position of every sequence."""
    count: Counter[tuple[int, ...]] = Counter()
    follow: dict[tuple[int, ...], Counter[int]] = {}
    for s in seqs:
        for end in range(len(s)):
            for d in range(1, min(depth, end + 1) + 1):
                count[tuple(s[end - d + 1 : end + 1])] += 1
            for d in range(0, min(depth - 1, end) + 1):
                follow.setdefault(tuple(s[end - d : end]), Counter())[s[end]] += 1
    return count, follow


def longest_match(seqs: list[list[int]], query: list[int], depth: int) -> int:
    """The longest suffix of `query` (< depth tokens) that occurs followed by a token."""
    _, follow = naive_counts(seqs, depth)
    best = 0
    for m in range(1, min(depth - 1, len(query)) + 1):
        if follow.get(tuple(query[len(query) - m :])):
            best = m
    return best


def check_trie(trie: SuffixTree, open_sids: set[int]) -> None:
    check(trie)
    seqs = trie.sequences()
    occurrences, follow = naive_counts(list(seqs.values()), trie.max_depth)
    for s, c in occurrences.items():
        assert count(trie, s) == c, (s, count(trie, s), c)
    for s, f in follow.items():
        assert continuations(trie, s) == dict(f), (s, continuations(trie, s), f)
    for sid in open_sids:
        seq, ends = seqs[sid], trie.ends(sid)
        for d, node in enumerate(ends):  # the explicit contexts at the end, one per length
            assert find(trie, seq[len(seq) - d :]) == (node, -1)
        if len(ends) < min(trie.max_depth, len(seq) + 1):  # ... and the next one is not explicit
            where = find(trie, seq[len(seq) - len(ends) :])
            assert where is not None and where[1] >= 0


@st.composite
def trie_ops(draw: st.DrawFn) -> tuple[int, list[tuple[str, int, int]]]:
    depth = draw(st.integers(2, 6))
    vocab = draw(st.integers(1, 4))
    ops = draw(st.lists(
        st.tuples(st.sampled_from(["add", "append", "append", "append", "close", "remove"]),
                  st.integers(0, 7), st.integers(0, vocab - 1)),
        min_size=1, max_size=60,
    ))
    return depth, ops


@settings(max_examples=max(150, settings.default.max_examples))
@given(trie_ops(), st.sampled_from([1, 32]))
def test_trie_counts_equal_brute_force(case: tuple[int, list[tuple[str, int, int]]], wide: int) -> None:
    """Interleaved appends to several open sequences, closes and removals: every count,
    every continuation and every open sequence's end contexts equal a naive scan."""
    with wide_nodes_from(wide):
        _trie_case(*case)


def _trie_case(depth: int, ops: list[tuple[str, int, int]]) -> None:
    trie = SuffixTree(depth)
    open_sids: set[int] = set()
    for op, pick, tok in ops:
        sids = sorted(trie.sequences())
        if op == "add" or not sids:
            open_sids.add(trie.add())
        elif op == "append" and open_sids:
            trie.append(sorted(open_sids)[pick % len(open_sids)], tok)
        elif op == "close" and open_sids:
            sid = sorted(open_sids)[pick % len(open_sids)]
            trie.close(sid)
            open_sids.discard(sid)
        elif op == "remove":
            sid = sids[pick % len(sids)]
            trie.remove(sid)
            open_sids.discard(sid)
        check_trie(trie, open_sids)
    for sid in list(trie.sequences()):
        trie.remove(sid)
    check(trie)
    assert (trie.nodes, trie.leaves, trie.entries) == (1, 0, 1)  # only the root is left


# -- the proposer against the specification ---------------------------------------------------
def path_probs(seqs: list[list[int]], context: list[int], draft: list[int], depth: int) -> list[float] | None:
    """Path probabilities of a chain draft under the naive counts, or None if some draft token
    is not a most frequent continuation."""
    _, follow = naive_counts(seqs, depth)
    probs, p, ctx = [], 1.0, list(context)
    for tok in draft:
        f = follow.get(tuple(ctx), Counter())
        if not f or f[tok] != max(f.values()):
            return None
        p *= f[tok] / sum(f.values())
        probs.append(p)
        ctx.append(tok)
    return probs


@st.composite
def request_streams(draw: st.DrawFn) -> tuple[int, int, list[tuple[list[int], int, list[int]]]]:
    """A few requests: (prompt, output length, cut points at which the proposer is asked)."""
    depth = draw(st.integers(3, 8))
    tail = draw(st.integers(0, 4))
    reqs = []
    for _ in range(draw(st.integers(1, 4))):
        tokens = draw(prompts(3, min_len=2, max_len=30))
        plen = draw(st.integers(1, len(tokens)))
        cuts = sorted(set(draw(st.lists(st.integers(plen, len(tokens)), min_size=1, max_size=6))))
        reqs.append((tokens, plen, cuts))
    return depth, tail, reqs


@settings(max_examples=max(100, settings.default.max_examples))
@given(request_streams(), st.booleans(), st.integers(1, 4), st.sampled_from([1, 32]), st.sampled_from(BUILT_CORES))
def test_drafts_follow_brute_force_counts(
    case: tuple[int, int, list[tuple[list[int], int, list[int]]]], use_start: bool, max_cached: int, wide: int,
    core: str,
) -> None:
    """Requests advance in lock step with one shared proposer (evicting each other when the
    cache is small). In each trie the longest context with a continuation equals the naive
    longest match (read from the Python trie's internals), and each chain draft is a
    most-frequent path from some match whose score and probability floor agree with the
    naive counts."""
    with wide_nodes_from(wide):
        _drafts_case(*case, use_start, max_cached, core)


def _drafts_case(
    depth: int, tail: int, reqs: list[tuple[list[int], int, list[int]]], use_start: bool, max_cached: int, core: str
) -> None:
    proposer = SuffixProposer(max_depth=depth, global_prompt_tail=tail, max_spec_factor=2.0, min_token_prob=0.2,
                              max_cached_requests=max_cached, core=core)
    views = [view(list(t[:p]), f"q{i}", p) for i, (t, p, _) in enumerate(reqs)]
    if use_start:
        for v in views:
            proposer.start(v)
    for step in range(max(len(c) for _, _, c in reqs)):
        for i, ((tokens, _, cuts), v) in enumerate(zip(reqs, views)):
            if step >= len(cuts):
                continue
            live = v.tokens._items  # type: ignore[attr-defined]
            live.extend(tokens[len(live) : cuts[step]])
            draft = proposer.propose([v], [6])[0]
            # What each trie should hold: the request's own tokens; everyone's outputs so far,
            # each after its prompt's last `tail` tokens.
            own = list(live)
            in_cache = {w.id for w in views if w.id in proposer._reqs and proposer._reqs[w.id].gsid in proposer.cache}
            cached = [list(t[max(0, p - tail) : len(w.tokens)]) for (t, p, _), w in zip(reqs, views) if w.id in in_cache]
            state = proposer._reqs[v.id]
            mine = list(tokens[max(0, reqs[i][1] - tail) : len(live)])
            tries = [(state.local, state.lsid, [own], own)]
            if v.id in in_cache:
                tries.append((proposer.cache, state.gsid, cached, mine))
            for trie, sid, seqs, query in tries:
                if proposer.core != "python":
                    break  # `continuations` reads the Python trie's internals
                ends = trie.ends(sid)
                got = max((m for m in range(1, len(ends)) if continuations(trie, query[len(query) - m :])), default=0)
                assert got == longest_match(seqs, query, depth), (got, seqs, query)
            if draft is None:
                continue
            assert 1 <= len(draft) <= 6 and draft.parents is None and draft.probs is None
            scores = []
            for _, _, seqs, query in tries:
                for m in range(1, min(depth - 1, len(query)) + 1):
                    probs = path_probs(seqs, query[len(query) - m :], list(draft.tokens), depth)
                    if probs is not None and len(draft) <= min(2 * m, depth - m) and probs[-1] >= 0.2:
                        scores.append(sum(probs))
            assert any(abs(s - draft.score) < 1e-9 for s in scores), (draft, scores)
    for v in views:
        proposer.finish(v)
    check(proposer.cache)


# -- bounds -----------------------------------------------------------------------------------
@st.composite
def streams(draw: st.DrawFn) -> tuple[int, int, int, list[tuple[str, int, list[int]]]]:
    depth = draw(st.integers(2, 8))
    max_requests = draw(st.integers(1, 5))
    max_nodes = draw(st.integers(1, 120))
    ops = draw(st.lists(
        st.tuples(st.sampled_from(["start", "observe", "observe", "propose", "finish"]),
                  st.integers(0, 9), st.lists(st.integers(0, 3), max_size=8)),
        min_size=1, max_size=50,
    ))
    return depth, max_requests, max_nodes, ops


@settings(max_examples=max(150, settings.default.max_examples))
@given(streams(), st.sampled_from([1, 32]), st.sampled_from(BUILT_CORES))
def test_cache_stays_within_bounds(
    case: tuple[int, int, int, list[tuple[str, int, list[int]]]], wide: int, core: str
) -> None:
    """Arbitrary start/observe/propose/finish streams: the global cache never holds more
    requests or entries than configured, evicts whole requests oldest first, and is exactly
    empty once everything is evicted."""
    with wide_nodes_from(wide):
        _bounds_case(*case, core)


def _bounds_case(
    depth: int, max_requests: int, max_nodes: int, ops: list[tuple[str, int, list[int]]], core: str
) -> None:
    proposer = SuffixProposer(max_depth=depth, max_cached_requests=max_requests, max_cached_nodes=max_nodes,
                              global_prompt_tail=2, core=core)
    running: dict[str, RequestView] = {}
    started: list[int] = []  # global sequence ids in the order requests joined the cache
    for n, (op, pick, tokens) in enumerate(ops):
        if op == "start" or not running:
            v = view(tokens or [0], f"s{n}")
            proposer.start(v)
            running[v.id] = v
            started.append(proposer._reqs[v.id].gsid)  # type: ignore[arg-type]
            continue
        v = running[sorted(running)[pick % len(running)]]
        if op == "observe":
            v.tokens._items.extend(tokens)  # type: ignore[attr-defined]
            proposer.observe(v, tokens, None)
        elif op == "propose":
            proposer.propose([v], [1 + pick])
        else:
            proposer.finish(running.pop(v.id))
        cache = proposer.cache
        assert len(cache) <= max_requests and cache.entries <= max_nodes
        cached = sorted(cache.sequences())
        assert cached == started[len(started) - len(cached) :]  # evicted: always the oldest
        stats = proposer.stats()
        assert stats["cached_requests"] == len(cached) and stats["global_entries"] == cache.entries
    check(proposer.cache)
    proposer.clear()
    check(proposer.cache)
    assert len(proposer.cache) == 0 and proposer.cache.entries == 1  # the root alone
    for v in list(running.values()):  # running requests go on, without the global cache
        v.tokens._items.extend([1, 2, 1, 2])  # type: ignore[attr-defined]
        proposer.propose([v], [3])
        proposer.finish(v)
    assert proposer.cache.entries == 1 and proposer.stats()["running_requests"] == 0


# -- cost ---------------------------------------------------------------------------------------
class CountingList(list):  # type: ignore[type-arg]
    """Counts element reads and writes: how many node rows an operation touched."""

    touches = 0

    def __getitem__(self, i):  # type: ignore[no-untyped-def]
        CountingList.touches += 1
        return super().__getitem__(i)

    def __setitem__(self, i, v):  # type: ignore[no-untyped-def]
        CountingList.touches += 1
        super().__setitem__(i, v)


def _synthetic(n: int, seed: int) -> list[int]:
    """Phrases from a small bank with random tokens between: repetition within and across."""
    import random

    rng = random.Random(seed)
    bank = [[(7 * p + 3 * i) % 50 for i in range(3 + p % 6)] for p in range(40)]
    out: list[int] = []
    while len(out) < n:
        out.extend(bank[rng.randrange(len(bank))] if rng.random() < 0.8 else [rng.randrange(50)])
    return out[:n]


@pytest.mark.parametrize("cached", [20, 1000])
def test_step_cost_is_independent_of_cache_and_context(cached: int) -> None:
    """Structural: an update touches O(max_depth) node rows per token and a proposal
    O(max_depth x budget) at most, whether 20 or 1000 requests are cached and the context
    is short or long."""
    depth, budget = 16, 6
    proposer = SuffixProposer(max_depth=depth, core="python")  # counts the Python trie's row accesses
    for i in range(cached):
        v = view(_synthetic(80, i), f"old{i}", 8)
        proposer.start(v)
        proposer.finish(v)
    cache = proposer.cache
    cache._out = CountingList(cache._out)
    cache._count = CountingList(cache._count)
    for context in (50, 3000):
        tokens = _synthetic(context, -1)
        v = view(tokens, f"new{context}")
        proposer.start(v)
        state = proposer._reqs[v.id]
        state.local._out = CountingList(state.local._out)
        state.local._count = CountingList(state.local._count)
        more = _synthetic(300, -2)
        worst_update, worst_propose = 0, 0
        for step in range(100):
            new = more[3 * step : 3 * step + 3]
            tokens.extend(new)
            CountingList.touches = 0
            proposer.observe(v, new, None)
            worst_update = max(worst_update, CountingList.touches)
            CountingList.touches = 0
            proposer.propose([v], [budget])
            worst_propose = max(worst_propose, CountingList.touches)
        # per token and trie, for each of <= depth end contexts: out and the child's count, read
        # and written, plus a few more when the child is made explicit
        assert worst_update <= 3 * 2 * depth * 8
        assert worst_propose <= 2 * depth * (3 + 3 * budget)
        proposer.finish(v)


# -- options, registry --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "options",
    [
        {"max_depth": 1}, {"max_depth": 64.0}, {"max_depth": True}, {"max_cached_requests": 0},
        {"max_cached_nodes": 0}, {"max_spec_factor": -1.0}, {"max_spec_factor": float("nan")},
        {"max_spec_offset": float("inf")}, {"min_token_prob": 1.5}, {"min_token_prob": -0.1},
        {"tree": 1}, {"use_global": "yes"}, {"max_tree_nodes": 0}, {"branching": 0},
        {"global_prompt_tail": -1}, {"core": "fortran"}, {"core": 1},
    ],
)
def test_bad_options_raise_config_error(options: dict[str, object]) -> None:
    with pytest.raises(ConfigError):
        SuffixProposer(**options)  # type: ignore[arg-type]


def test_registered_and_conforms() -> None:
    proposer = create("suffix", max_depth=32, tree=True)
    assert isinstance(proposer, SuffixProposer) and isinstance(proposer, Proposer)
    assert proposer.name == "suffix" and proposer.needs_hidden_states is False


def test_global_cache_serves_other_requests_and_never_the_request_itself() -> None:
    for tail, expect in ((4, [4, 5, 6]), (0, None)):
        proposer = SuffixProposer(global_prompt_tail=tail)
        a = view([9, 9, 1, 2, 3, 4, 5, 6], "a", 2)  # output 1..6
        proposer.start(a)
        proposer.finish(a)
        # b's prompt ends the way a's output began: only the prompt's tail in the global
        # trie lets b's very first step match there.
        draft = proposer.propose([view([7, 1, 2, 3], "b", 4)], [3])[0]
        assert (None if draft is None else list(draft.tokens)) == expect
        if draft is not None:
            assert draft.score == 3.0  # seen once, always followed the same way
    # The request's own fresh text is in the global cache, but has no continuation yet.
    lone = SuffixProposer()
    d = view([1, 2, 3, 4, 5], "d", 1)
    lone.start(d)
    assert lone.propose([d], [4]) == [None]
    # Local-only: the same request repeating itself is found by its own trie.
    d.tokens._items.extend([1, 2, 3])  # type: ignore[attr-defined]
    got = lone.propose([d], [2])[0]
    assert got is not None and list(got.tokens) == [4, 5]


def test_tree_mode_branches_and_first_chain_is_the_chain_draft() -> None:
    tokens = [5, 1, 2, 5, 1, 3, 5, 1, 2, 5, 1, 4, 5, 1, 2, 9, 5, 1]  # after "5 1": 2 (x3), 3, 4
    chain = SuffixProposer(use_global=False, max_spec_factor=4.0).propose([view(tokens)], [4])[0]
    tree = SuffixProposer(use_global=False, max_spec_factor=4.0, tree=True, branching=3).propose([view(tokens)], [4])[0]
    assert chain is not None and tree is not None
    assert chain.tokens[0] == 2 and tree.tokens[0] == 2
    assert tree.parents is not None and not tree.is_chain and tree.parents.count(-1) >= 2
    first = [tree.tokens[0]]  # follow each node's first child
    at = 0
    while (nxt := next((i for i, p in enumerate(tree.parents) if p == at), None)) is not None:
        first.append(tree.tokens[nxt])
        at = nxt
    assert first == list(chain.tokens)[: len(first)]
    assert tree.score > chain.score - 1e-12  # the siblings add probability mass


def test_budget_zero_and_nothing_to_match() -> None:
    proposer = SuffixProposer()
    assert proposer.propose([view([1, 2, 1, 2])], [0]) == [None]
    assert proposer.propose([view([1, 2, 3, 4], "x")], [4]) == [None]
    assert proposer.propose([view([7], "y")], [4]) == [None]
    got = proposer.propose([view([1], "z")], [4])[0]  # x's text, from the global cache
    assert got is not None and list(got.tokens) == [2]


# -- lossless through the engine ------------------------------------------------------------------
MODES = {"chain": {}, "tree": {"tree": True, "branching": 2}}


@pytest.fixture(scope="module")
def backend(tiny_model):  # type: ignore[no-untyped-def]
    return HFBackend(tiny_model)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_greedy_equals_target_only_with_a_shared_cache(mode: str, tiny_model, backend) -> None:  # type: ignore[no-untyped-def]
    """One proposer for every example: its global cache is shared by the concurrent requests
    of a run and carried over from run to run (engine to engine)."""
    proposer = SuffixProposer(max_depth=16, max_cached_requests=40, **MODES[mode])  # type: ignore[arg-type]
    seen = Counter[str]()
    propose = proposer.propose

    def counting(reqs, budgets):  # type: ignore[no-untyped-def]
        drafts = propose(reqs, budgets)
        seen.update(branched=sum(d is not None and not d.is_chain for d in drafts))
        return drafts

    proposer.propose = counting  # type: ignore[method-assign]

    @settings(max_examples=20)
    @given(
        batch=st.lists(prompts(backend.vocab_size, max_len=24), min_size=1, max_size=5),
        n_new=st.integers(1, 20),
        k=st.integers(1, 6),
    )
    def case(batch: list[list[int]], n_new: int, k: int) -> None:
        params = [SamplingParams(max_new_tokens=n_new)] * len(batch)
        done, metrics = anyio.run(run_concurrently, backend, [proposer], batch, params, k)
        for prompt, completion in zip(batch, done, strict=True):
            ref, margins = reference_greedy(tiny_model, prompt, n_new)
            assert tie_aware_equal(list(completion.token_ids), ref, margins), (prompt, completion.token_ids, ref)
        assert len(backend) == 0 and metrics.totals.proposer_errors == 0
        seen.update(cases=1, drafted=metrics.totals.drafted, accepted=metrics.totals.accepted)

    case()
    assert seen["cases"] >= 20 and seen["drafted"] > 0 and seen["accepted"] > 0, seen
    assert (seen["branched"] > 0) == (mode == "tree"), seen  # real trees went to verification
    assert proposer.stats()["running_requests"] == 0 and len(proposer.cache) <= 40
    check(proposer.cache)


@pytest.mark.parametrize("mode", sorted(MODES))
@given(prompt=prompts(6, max_len=12), n_new=st.integers(1, 30), order=st.sampled_from([1, 2]))
@settings(max_examples=30)
def test_greedy_table_target(mode: str, prompt: list[int], n_new: int, order: int) -> None:
    """The table target checks the KV convention itself; three copies of the prompt run at
    once through one proposer."""
    target = TableTarget(vocab_size=6, order=order, seed=len(prompt))
    ref, margins = reference_greedy(target, prompt, n_new)
    proposer = SuffixProposer(**MODES[mode])  # type: ignore[arg-type]
    params = [SamplingParams(max_new_tokens=n_new)] * 3
    done, _ = anyio.run(run_concurrently, target, [proposer], [prompt] * 3, params, 4)
    for completion in done:
        assert tie_aware_equal(list(completion.token_ids), ref, margins)
    assert not target.active_requests


def test_repetitive_prompts_draft_and_accept() -> None:
    target = TableTarget(vocab_size=6, order=2, seed=1)
    proposer = SuffixProposer()
    prompts_ = [[1, 2, 3, 4] * 6, [5, 1, 5, 2] * 5, [3, 3, 4] * 7]
    params = [SamplingParams(max_new_tokens=40)] * len(prompts_)
    done, metrics = anyio.run(run_concurrently, target, [proposer], prompts_, params, 5)
    for prompt, completion in zip(prompts_, done):
        ref, margins = reference_greedy(target, prompt, 40)
        assert tie_aware_equal(list(completion.token_ids), ref, margins)
    assert metrics.totals.drafted > 0 and metrics.totals.accepted > 0
    assert metrics.totals.mean_accepted_length > 1.5  # greedy on a table target loops


SAMPLING = {
    "t=1": SamplingParams(temperature=1.0, max_new_tokens=3),
    "t=0.7,top_k=3": SamplingParams(temperature=0.7, top_k=3, max_new_tokens=3),
}


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("pname", sorted(SAMPLING))
def test_sampled_sequences_follow_target_distribution(pname: str, mode: str) -> None:
    """Deterministic drafts (q one-hot), chains and trees, with the global cache filled by the
    concurrent requests themselves: whole output sequences against the exact distribution."""
    n, prompt = 3000, [1, 2, 3]
    target = TableTarget(vocab_size=5, order=2, seed=3)
    params = SAMPLING[pname]
    exact = exact_sequence_distribution(target, prompt, params.max_new_tokens, params)
    proposer = SuffixProposer(global_prompt_tail=3, **MODES[mode])  # type: ignore[arg-type]
    all_params = [attrs.evolve(params, seed=i) for i in range(n)]
    done, metrics = anyio.run(run_concurrently, target, [proposer], [prompt] * n, all_params, 3)
    stat, dof, p = chi_square(Counter(tuple(c.token_ids) for c in done), exact, n)
    assert metrics.totals.drafted > 0 and metrics.totals.accepted > 0
    assert p > 1e-4, f"chi2={stat:.1f} dof={dof} p={p:.2e}"
    assert not target.active_requests


def test_check_lossless_kit() -> None:
    report = check_lossless(lambda target: SuffixProposer(max_depth=16), greedy_examples=8, sampling_samples=1500)
    assert report.drafted > 0 and report.proposer_errors == 0


def test_fast_draft_equals_draft() -> None:
    """The proposer builds its Drafts without Draft's converters: same fields, same checks pass."""
    from spec_sdk.proposers.suffix import _draft
    from spec_sdk.types import Draft

    for parents in (None, [-1, 0, 0, 2]):
        fast = _draft([5, 6, 7, 8], parents, 2.5, "suffix")
        slow = Draft(tokens=[5, 6, 7, 8], parents=parents, score=2.5, source="suffix")
        assert attrs.asdict(fast) == attrs.asdict(slow)
        assert type(fast.tokens) is tuple and all(type(t) is int for t in fast.tokens)
