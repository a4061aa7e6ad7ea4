"""SuffixIndex and top_continuations against brute-force scans of the corpus."""

from __future__ import annotations

from collections import Counter

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from spec_sdk_retrieval.continuations import top_continuations
from spec_sdk_retrieval.index import SEP, SuffixIndex, suffix_array

DOCS = st.lists(st.lists(st.integers(0, 3), max_size=30), min_size=1, max_size=4)
CONTEXT = st.lists(st.integers(0, 4), min_size=1, max_size=12)


def doc_offsets(docs: list[list[int]]) -> list[int]:
    """Where each document starts in `SEP d0 SEP d1 ... SEP`."""
    out, pos = [], 1
    for doc in docs:
        out.append(pos)
        pos += len(doc) + 1
    return out


def brute_match(docs: list[list[int]], ctx: list[int], max_len: int, min_occ: int) -> tuple[int, list[int]] | None:
    offsets = doc_offsets(docs)
    best = None
    for n in range(1, min(max_len, len(ctx)) + 1):
        tail = ctx[-n:]
        starts = [offsets[d] + i + n for d, doc in enumerate(docs) for i in range(len(doc) - n + 1) if doc[i : i + n] == tail]
        if len(starts) < min_occ:
            break
        best = (n, starts)
    return best


@settings(max_examples=300, deadline=None, derandomize=True)
@given(values=st.lists(st.integers(-1, 3), max_size=40))
def test_suffix_array_sorts_suffixes(values: list[int]) -> None:
    got = suffix_array(np.array(values, dtype=np.int64)).tolist()
    assert got == sorted(range(len(values)), key=lambda i: values[i:])


@settings(max_examples=400, deadline=None, derandomize=True)
@given(docs=DOCS, ctx=CONTEXT, max_len=st.integers(1, 10), min_occ=st.integers(1, 4))
def test_longest_match_equals_brute_force(docs: list[list[int]], ctx: list[int], max_len: int, min_occ: int) -> None:
    index = SuffixIndex(docs)
    got = index.longest_match(ctx, max_len, max_occurrences=10_000, min_occurrences=min_occ)
    want = brute_match(docs, ctx, max_len, min_occ)
    if want is None:
        assert got is None
        return
    assert got is not None
    assert got.length == want[0]
    assert got.occurrences == len(want[1])
    assert sorted(got.starts.tolist()) == sorted(want[1])


def test_occurrences_are_sampled_evenly_when_there_are_many() -> None:
    docs = [[7, 1, 7, 2, 7, 3] * 100]
    index = SuffixIndex(docs)
    match = index.longest_match([7], 4, max_occurrences=50)
    assert match is not None and match.occurrences == 300 and len(match.starts) == 50
    fw = index.forward
    assert all(fw[s - 1] == 7 for s in match.starts)
    # the sample spans the suffix array's range: every continuation token is represented
    assert {int(fw[s]) for s in match.starts} == {1, 2, 3}


def test_matches_and_continuations_stop_at_document_boundaries() -> None:
    index = SuffixIndex([[1, 2, 3], [4, 5]])
    match = index.longest_match([3, 4], 8, 100)
    assert match is not None and match.length == 1  # "3 4" spans two documents
    end = index.longest_match([2, 3], 8, 100)
    assert end is not None and end.length == 2
    assert top_continuations(index.forward, end.starts, 4).tokens == []  # the document ended


def test_unknown_token_and_empty_corpus() -> None:
    assert SuffixIndex([[1, 2]]).longest_match([9], 4, 10) is None
    empty = SuffixIndex([])
    assert empty.longest_match([1], 4, 10) is None and empty.stats().tokens == 0


def test_stats_report_tokens_and_bytes() -> None:
    index = SuffixIndex([[1, 2, 3], [4, 5]])
    stats = index.stats()
    assert (stats.documents, stats.tokens) == (2, 5)
    # int32 reversed tokens and suffix array over the 8 positions (5 tokens and 3 separators)
    assert stats.bytes >= 2 * 4 * 8 and stats.build_seconds >= 0
    assert index.max_token == 5


def brute_trie(forward: list[int], starts: list[int], depth: int) -> Counter[tuple[int, ...]]:
    """Occurrences passing through each trie path of length <= depth."""
    counts: Counter[tuple[int, ...]] = Counter()
    for s in starts:
        path: tuple[int, ...] = ()
        for j in range(depth):
            if s + j >= len(forward) or forward[s + j] == SEP:
                break
            path += (forward[s + j],)
            counts[path] += 1
    return counts


@settings(max_examples=300, deadline=None, derandomize=True)
@given(docs=DOCS, ctx=CONTEXT, budget=st.integers(1, 8))
def test_tree_holds_the_most_frequent_continuations(docs: list[list[int]], ctx: list[int], budget: int) -> None:
    index = SuffixIndex(docs)
    match = index.longest_match(ctx, 3, 10_000)
    if match is None:
        return
    fw = index.forward.tolist()
    starts = match.starts.tolist()
    found = top_continuations(index.forward, match.starts, budget)
    trie = brute_trie(fw, starts, budget)
    paths: list[tuple[int, ...]] = []
    for token, parent in zip(found.tokens, found.parents):
        assert parent < len(paths)
        paths.append((() if parent == -1 else paths[parent]) + (token,))
    assert len(set(paths)) == len(paths) == min(budget, len(trie))
    counts = [trie[p] for p in paths]
    assert counts == sorted(counts, reverse=True)  # best first
    assert counts == sorted(trie.values(), reverse=True)[: len(paths)]  # and the best there are
    assert found.shares == [c / len(starts) for c in counts]


@settings(max_examples=200, deadline=None, derandomize=True)
@given(docs=DOCS, ctx=CONTEXT, budget=st.integers(1, 8))
def test_chain_follows_the_majority_token(docs: list[list[int]], ctx: list[int], budget: int) -> None:
    index = SuffixIndex(docs)
    match = index.longest_match(ctx, 3, 10_000)
    if match is None:
        return
    fw = index.forward.tolist()
    found = top_continuations(index.forward, match.starts, budget, chain=True)
    assert found.parents == list(range(-1, len(found.tokens) - 1))
    live = match.starts.tolist()
    for j, token in enumerate(found.tokens):
        votes = Counter(fw[s + j] for s in live if fw[s + j] != SEP)
        top = max(votes.values())
        assert votes[token] == top and token == min(t for t, c in votes.items() if c == top)
        live = [s for s in live if fw[s + j] == token]
    if len(found.tokens) < budget:  # it stopped only where every occurrence's document ended
        assert all(fw[s + len(found.tokens)] == SEP for s in live)
