"""A suffix array over the reversed corpus: the longest corpus match of a context's suffix,
and what followed it there.

The documents are concatenated as `SEP d0 SEP d1 ... SEP` (SEP = -1, never a token id) and
reversed. A suffix of the reversed text starting at a corpus position reads the corpus
*backwards* from there, so "the request ends with w_1..w_m" is a prefix query on the reversed
suffixes: reading the context from its last token backwards narrows a suffix-array range by
one binary search per token, and the longest match falls out of one left-to-right pass, in
O(m log n) for a match of length m (the first token's range is a table look-up, and once a
single occurrence is left the match is extended by direct comparison). The SEPs stop every
match and every continuation at a document boundary.

Memory: the reversed tokens and the suffix array, int32 each (8 bytes per corpus token), plus
one (lo, hi) pair per distinct token for the first step.
"""

from __future__ import annotations

import time
from bisect import bisect_left, bisect_right
from collections.abc import Sequence

import attrs
import numpy as np

SEP = -1


@attrs.frozen
class IndexStats:
    documents: int
    tokens: int
    bytes: int
    build_seconds: float


@attrs.frozen
class Match:
    """The longest suffix of a context found in the corpus: its length, and the corpus
    positions right after each occurrence (where the continuation starts)."""

    length: int
    starts: np.ndarray  # int64, forward positions
    occurrences: int  # all occurrences; `starts` may be a sample of them


def suffix_array(values: np.ndarray) -> np.ndarray:
    """Suffix array by prefix doubling with numpy sorts: O(n log n) per round, one round per
    doubling of the longest repeat. Positions past the end compare below every value."""
    n = len(values)
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    rank = np.unique(values, return_inverse=True)[1].astype(np.int64).reshape(-1)
    step = 1
    while True:
        second = np.full(n, -1, dtype=np.int64)
        second[: n - step] = rank[step:]
        order = np.lexsort((second, rank))
        r, s = rank[order], second[order]
        new_group = np.empty(n, dtype=np.int64)
        new_group[0] = 0
        new_group[1:] = np.cumsum((r[1:] != r[:-1]) | (s[1:] != s[:-1]))
        rank = np.empty(n, dtype=np.int64)
        rank[order] = new_group
        if new_group[-1] == n - 1 or step >= n:
            return order
        step *= 2


class SuffixIndex:
    """Immutable once built, so one index can serve many proposers and threads."""

    def __init__(self, documents: Sequence[Sequence[int]]) -> None:
        t0 = time.perf_counter()
        parts: list[np.ndarray] = [np.array([SEP], dtype=np.int32)]
        for doc in documents:
            arr = np.asarray(doc, dtype=np.int64).reshape(-1)
            if arr.size and arr.min() < 0:
                raise ValueError("corpus token ids must be >= 0")
            parts += [arr.astype(np.int32), np.array([SEP], dtype=np.int32)]
        forward = np.concatenate(parts)
        self._forward = forward
        rev = np.ascontiguousarray(forward[::-1])
        sa = suffix_array(rev).astype(np.int32)
        self._n = len(rev)
        # memoryviews: indexing one yields a Python int without numpy's per-item overhead,
        # which is what the binary searches' key function does most.
        self._rev = memoryview(rev)
        self._sa_np = sa
        self._sa = memoryview(sa)
        first = rev[sa]
        values, lo = np.unique(first, return_index=True)
        hi = np.append(lo[1:], len(first))
        self._first = {int(v): (int(a), int(b)) for v, a, b in zip(values, lo, hi) if v != SEP}
        self._rev_np = rev
        self.max_token = int(forward.max())  # -1 for an empty corpus
        self._documents = len(documents)
        self._build_seconds = time.perf_counter() - t0

    @property
    def forward(self) -> np.ndarray:
        """`SEP d0 SEP d1 ... SEP`: what continuation positions index into."""
        return self._forward

    def stats(self) -> IndexStats:
        table = len(self._first) * 2 * 8  # what the first-token table's ints would take packed
        nbytes = self._rev_np.nbytes + self._sa_np.nbytes + table
        return IndexStats(self._documents, self._n - self._documents - 1, nbytes, self._build_seconds)

    def longest_match(
        self, context: Sequence[int], max_len: int, max_occurrences: int, min_occurrences: int = 1
    ) -> Match | None:
        """The longest suffix (at most `max_len` tokens) of `context` that occurs in the corpus
        at least `min_occurrences` times, and up to `max_occurrences` of its continuation
        starts (an even sample across the suffix array range when there are more)."""
        length = len(context)
        if length == 0 or max_len <= 0:
            return None
        first = self._first.get(int(context[-1]))
        if first is None or first[1] - first[0] < min_occurrences:
            return None
        lo, hi = first
        rev, sa = self._rev, self._sa
        m = 1
        while m < max_len and m < length:
            token = int(context[length - 1 - m])
            if hi - lo == 1:
                if min_occurrences <= 1:
                    m = self._extend_single(sa[lo] + m, context, m, max_len)
                break
            depth = m

            def key(p: int) -> int:
                return rev[p + depth]

            new_lo = bisect_left(sa, token, lo, hi, key=key)
            new_hi = bisect_right(sa, token, new_lo, hi, key=key)
            if new_hi - new_lo < max(1, min_occurrences):
                break
            lo, hi, m = new_lo, new_hi, m + 1
        count = hi - lo
        step = max(1, -(-count // max_occurrences))
        rev_pos = self._sa_np[lo:hi:step][:max_occurrences].astype(np.int64)
        # reversed position q is forward position n-1-q, the occurrence's last token
        starts = (self._n - rev_pos).astype(np.int64)
        return Match(m, starts, count)

    def _extend_single(self, rev_pos: int, context: Sequence[int], m: int, max_len: int) -> int:
        """One occurrence left: compare it with the context directly."""
        rev, length = self._rev, len(context)
        # the SEP at the reversed text's end stops the loop before it could read past it
        while m < max_len and m < length and rev[rev_pos] == context[length - 1 - m]:
            rev_pos += 1
            m += 1
        return m
