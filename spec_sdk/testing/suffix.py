"""Test helpers for the suffix trie, shared by the tests of both cores (the pure-Python
`suffix_tree.SuffixTree` and its compiled twin `_suffix_core.SuffixTree`)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from spec_sdk.proposers import suffix_tree
from spec_sdk.proposers.suffix_tree import CSuffixTree


def check_trie(trie: Any) -> None:
    """A trie's internal invariants: counts, `out`, best children, depths, sizes. The compiled
    trie checks the same ones itself (`_check()`). Like it, this first rescans every stale
    node: a state change, so two tries are only compared after both were checked."""
    if CSuffixTree is not None and isinstance(trie, CSuffixTree):
        trie._check()
        return
    for n in list(trie._stale):
        trie._rescan(n)
    nodes, leaves = 0, 0
    for n, d in enumerate(trie._depth):
        if d < 0:
            continue
        nodes += 1
        edges = trie._edges(n)
        counts = {t: (trie._count[c] if c >= 0 else 1) for t, c in edges.items()}
        leaves += sum(c < 0 for c in edges.values())
        assert trie._out[n] == sum(counts.values()), (n, trie._out[n], counts)
        assert trie._bestc[n] == max(counts.values(), default=0), (n, trie._bestc[n], counts)
        if counts:
            assert counts[trie._best[n]] == trie._bestc[n] and edges[trie._best[n]] == trie._bestk[n]
        for c in edges.values():
            if c >= 0:
                assert trie._depth[c] == d + 1 and trie._count[c] > 0, (n, c)
    assert (nodes, leaves) == (trie.nodes, trie.leaves), ((nodes, leaves), (trie.nodes, trie.leaves))
    assert trie.tokens == sum(len(s) for s in trie._seqs.values())


@contextmanager
def wide_nodes_from(width: int) -> Iterator[None]:
    """Both cores treat nodes with more than `width` children as wide (lazily rescanned hubs),
    so that small vocabularies exercise that path too."""
    saved = suffix_tree.WIDE
    suffix_tree.WIDE = width
    old = None
    if CSuffixTree is not None:
        from spec_sdk.proposers import _suffix_core

        old = _suffix_core.set_wide(width)
    try:
        yield
    finally:
        suffix_tree.WIDE = saved
        if old is not None:
            _suffix_core.set_wide(old)
