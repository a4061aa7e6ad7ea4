"""The compiled suffix trie (`_suffix_core.SuffixTree`) against the Python one it mirrors:
both driven by the same random operation streams must give identical drafts (tokens,
parents, scores to the last bit), sizes and sequences. (The Python trie itself is checked
against brute-force counts in test_suffix.py.)"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spec_sdk.errors import ConfigError
from spec_sdk.proposers.suffix import SuffixProposer
from spec_sdk.proposers.suffix_tree import SuffixTree, make_tree, resolve_core
from spec_sdk.testing.suffix import check_trie, wide_nodes_from

core = pytest.importorskip("spec_sdk.proposers._suffix_core", reason="the compiled suffix core is not built")
CTree = core.SuffixTree


def same_state(py: SuffixTree, c: Any, open_sids: set[int]) -> None:
    assert (c.nodes, c.leaves, c.tokens, c.entries, len(c)) == (py.nodes, py.leaves, py.tokens, py.entries, len(py))
    assert c.sequences() == py.sequences()
    assert list(c.sequences()) == list(py.sequences())  # same order too
    for sid in open_sids:
        assert len(c.ends(sid)) == len(py.ends(sid))
        assert c.growth_bound(sid, 5) == py.growth_bound(sid, 5)


# Draft parameters: mostly ones that let drafts through (the interesting case), some edge ones.
FACTORS = [0.0, 0.5, 1.0, 2.0, 2.0, 3.5]
OFFSETS = [-1.0, 0.0, 0.0, 0.5, 2.0]
PROBS = [0.0, 0.0, 0.05, 0.1, 0.3, 0.5, 1.0]
SCORES = [-1.0, 0.0, 0.0, 0.0, 0.5, 1.5]


@st.composite
def op_streams(draw: st.DrawFn) -> tuple[int, int, list[tuple[Any, ...]]]:
    depth = draw(st.integers(2, 8))
    vocab = draw(st.integers(1, 5))
    toks = st.lists(st.integers(0, vocab - 1), max_size=8)
    draft = st.tuples(st.just("draft"), st.integers(0, 7), st.integers(0, 10), st.sampled_from(FACTORS),
                      st.sampled_from(OFFSETS), st.sampled_from(PROBS), st.sampled_from(SCORES), st.integers(0, 4))
    walk = st.tuples(st.sampled_from(["chain", "tree"]), st.integers(0, 7), st.integers(0, 9), st.integers(0, 10),
                     st.sampled_from(PROBS), st.integers(1, 4))
    ops = draw(st.lists(
        st.one_of(
            st.tuples(st.sampled_from(["add", "close", "remove", "check"]), st.integers(0, 7)),
            st.tuples(st.just("extend"), st.integers(0, 7), toks),
            st.tuples(st.just("extend"), st.integers(0, 7), toks),
            st.tuples(st.just("append"), st.integers(0, 7), st.integers(0, vocab - 1)),
            draft, draft, walk,
        ),
        min_size=1, max_size=80,
    ))
    return depth, vocab, ops


@settings(max_examples=max(300, settings.default.max_examples))
@given(op_streams(), st.sampled_from([1, 2, 32]))
def test_c_core_equals_python_core(case: tuple[int, int, list[tuple[Any, ...]]], wide: int) -> None:
    """Interleaved extends of several open sequences, closes, removals, chain and tree drafts
    with random parameters, invariant checks: the same results and sizes after every step."""
    depth, _, ops = case
    with wide_nodes_from(wide):
        py, c = SuffixTree(depth), CTree(depth)
        open_sids: set[int] = set()
        for op in ops:
            kind, pick = op[0], op[1]
            sids = sorted(py.sequences())
            live = sorted(open_sids)
            if kind == "add" or not sids:
                sid = py.add()
                assert c.add() == sid
                open_sids.add(sid)
            elif kind in ("extend", "append") and live:
                sid = live[pick % len(live)]
                getattr(py, kind)(sid, op[2])
                getattr(c, kind)(sid, op[2])
            elif kind == "close" and live:
                sid = live[pick % len(live)]
                py.close(sid)
                c.close(sid)
                open_sids.discard(sid)
            elif kind == "remove":
                sid = sids[pick % len(sids)]
                py.remove(sid)
                c.remove(sid)
                open_sids.discard(sid)
            elif kind == "check":
                check_trie(py)
                c._check()
            elif kind == "draft" and live:
                sid = live[pick % len(live)]
                args = op[2:]
                got, want = c.best_draft(sid, *args), py.best_draft(sid, *args)
                assert got == want, (args, got, want)
            elif kind in ("chain", "tree") and live:
                sid = live[pick % len(live)]
                ends_py, ends_c = py.ends(sid), c.ends(sid)
                m = op[2] % len(ends_py)  # the same context, whatever its node id in each
                _, _, limit, min_prob, branching = op[1:]
                if kind == "chain":
                    assert c.chain(ends_c[m], limit, min_prob) == py.chain(ends_py[m], limit, min_prob)
                else:
                    got = c.tree(ends_c[m], limit, min_prob, branching)
                    assert got == py.tree(ends_py[m], limit, min_prob, branching)
            same_state(py, c, open_sids)
        check_trie(py)
        c._check()
        for sid in sorted(py.sequences()):
            py.remove(sid)
            c.remove(sid)
        same_state(py, c, set())
        c._check()
        assert (c.nodes, c.leaves, c.entries) == (1, 0, 1)


def _random_stream(seed: int, wide: int) -> None:
    """One long random stream on both cores (hypothesis favours short ones; removals that
    leave wide nodes stale and the appends after them need longer ones)."""
    import random

    rng = random.Random(seed)
    depth, vocab = rng.randint(2, 7), rng.randint(2, 4)
    with wide_nodes_from(wide):
        py, c = SuffixTree(depth), CTree(depth)
        live: list[int] = []
        for _ in range(80):
            r, sids = rng.random(), sorted(py.sequences())
            if r < 0.1 or not sids:
                sid = py.add()
                assert c.add() == sid
                live.append(sid)
            elif r < 0.55 and live:
                sid, toks = rng.choice(live), [rng.randrange(vocab) for _ in range(rng.randint(1, 6))]
                py.extend(sid, toks)
                c.extend(sid, toks)
            elif r < 0.65:
                sid = rng.choice(sids)
                py.remove(sid)
                c.remove(sid)
                live = [x for x in live if x != sid]
            elif r < 0.7 and live:
                sid = rng.choice(live)
                py.close(sid)
                c.close(sid)
                live.remove(sid)
            elif live:
                sid = rng.choice(live)
                args = (rng.randint(1, 10), rng.choice([1.0, 2.0]), rng.choice([0.0, 1.0]), rng.choice([0.0, 0.1, 0.3]),
                        0.0, rng.choice([0, 0, 2, 3]))
                assert c.best_draft(sid, *args) == py.best_draft(sid, *args), (seed, args)
            assert (c.nodes, c.leaves, c.tokens) == (py.nodes, py.leaves, py.tokens)
        assert c.sequences() == py.sequences()
        check_trie(py)
        c._check()


@pytest.mark.parametrize("wide", [1, 32])
def test_c_core_equals_python_core_on_long_random_streams(wide: int) -> None:
    for seed in range(300):
        _random_stream(seed, wide)


def _text(n: int, seed: int, vocab: int = 40) -> list[int]:
    """Phrases from a small bank with random tokens between: repeats within and across."""
    import random

    rng = random.Random(seed)
    bank = [[rng.randrange(vocab) for _ in range(rng.randint(2, 9))] for _ in range(30)]
    out: list[int] = []
    while len(out) < n:
        out.extend(bank[rng.randrange(len(bank))] if rng.random() < 0.8 else [rng.randrange(vocab)])
    return out[:n]


@pytest.mark.parametrize("mode", [{}, {"tree": True, "branching": 3}])
def test_proposers_on_both_cores_draft_the_same(mode: dict[str, Any]) -> None:
    """A proposer on each core, the same request stream (FIFO eviction, a small node bound,
    wide hubs: vocabulary 40 > WIDE): the same drafts, bit for bit, and the same cache sizes."""
    from spec_sdk.proposers.base import RequestView
    from spec_sdk.types import SamplingParams, SpecStats

    kw = dict(max_depth=12, max_cached_requests=15, max_cached_nodes=3000, max_spec_factor=2.0, **mode)
    props = {name: SuffixProposer(core=name, **kw) for name in ("python", "c")}
    for r in range(40):
        text = _text(120, r)
        views = {name: RequestView(f"r{r}", text[:20], 20, SamplingParams(), SpecStats()) for name in props}
        for name, p in props.items():
            p.start(views[name])
        for pos in range(20, len(text), 3):
            drafts = {}
            for name, p in props.items():
                v = views[name]
                d = p.propose([v], [8])[0]
                drafts[name] = None if d is None else (d.tokens, d.parents, d.score)
                v.tokens._items.extend(text[pos : pos + 3])  # type: ignore[attr-defined]
                p.observe(v, text[pos : pos + 3], None)
            assert drafts["c"] == drafts["python"], (r, pos)
        for name, p in props.items():
            p.finish(views[name])
        stats = {name: {k: v for k, v in p.stats().items() if k != "core"} for name, p in props.items()}
        assert stats["c"] == stats["python"]
    assert props["c"].stats()["core"] == "c" and props["python"].stats()["core"] == "python"
    props["c"].cache._check()


def test_core_selection() -> None:
    assert resolve_core("auto") == "c" and resolve_core("python") == "python"
    assert isinstance(make_tree(8, "c"), CTree) and isinstance(make_tree(8), CTree)
    assert isinstance(make_tree(8, "python"), SuffixTree)
    with pytest.raises(ValueError):
        make_tree(8, "fortran")
    assert SuffixProposer().stats()["core"] == "c"
    for bad in ("fortran", 1, None):
        with pytest.raises(ConfigError):
            SuffixProposer(core=bad)  # type: ignore[arg-type]


def test_errors_like_a_dict_and_bad_arguments() -> None:
    t = CTree(4)
    sid = t.add()
    for call in (lambda: t.extend(7, [1]), lambda: t.remove(7), lambda: t.ends(7), lambda: t.growth_bound(7, 1),
                 lambda: t.best_draft(7, 4, 1.0, 0.0, 0.1, 0.0, 0)):
        with pytest.raises(KeyError):
            call()
    t.close(7)  # like dict.pop(sid, None): nothing to do
    t.extend(sid, (1, 2, 1))  # any sequence of ints
    t.extend(sid, iter([2, 1]))
    t.append(sid, 2)
    with pytest.raises(ValueError):
        t.extend(sid, [1, -1])
    with pytest.raises(OverflowError):
        t.append(sid, 2**31)
    with pytest.raises(TypeError):
        t.extend(sid, [1.5])
    assert t.sequences() == {sid: [1, 2, 1, 2, 1, 2]}  # a rejected call adds nothing
    with pytest.raises(ValueError):
        CTree(0)
    with pytest.raises(ValueError):
        t.chain(99, 4, 0.1)
    with pytest.raises(ValueError):
        t.best_draft(sid, 4, float("nan"), 0.0, 0.1, 0.0, 0)
    t.close(sid)
    with pytest.raises(KeyError):
        t.extend(sid, [1])  # closed
    assert sid in t and 5 not in t and "x" not in t and None not in t
    t.remove(sid)
    assert sid not in t and len(t) == 0 and t.entries == 1
    t._check()
