"""A depth-capped suffix trie with occurrence counts over a changing set of token sequences.

Every substring of length <= `max_depth` of every stored sequence is in the trie with its
number of occurrences, so "what followed this context, and how often" is a child lookup.
Sequences grow one token at a time and can be removed whole.

What keeps it cheap in pure Python:

- A context that has occurred only once needs no node: the edge into it is a *leaf*, a
  pointer (sequence, position) to its one occurrence, and everything below it is read from
  that sequence's tokens. Only strings that occurred twice (at some point) are *explicit*
  nodes, so memory follows the repeated text, not `tokens x depth`.
- Each open sequence keeps the explicit nodes of the contexts ending at its last token, one
  per length (`ends`; the longer contexts are leaves, i.e. unique). Appending a token touches
  only those: O(len(ends)) <= O(max_depth) list and dict operations, whatever the length of
  the sequence and the size of the trie.
- Nodes are rows of flat typed arrays. A node's most frequent child (token, count, edge) is
  stored inline; a dict of all children exists only once a node has two (most have one: a
  dict would double the memory).

Cost: an append does a dict or array access per context length that occurred before, so
repeated text costs up to `max_depth` of them a token (~0.1 us each when the text follows its
most frequent continuation; ~0.5 us when a node has to be created, i.e. the first time a
passage seen once before is repeated -- which also adds up to `max_depth` entries a token).

Counts: `count[x]` is how many times string x occurs (ending anywhere, also at a sequence's
last token); `out[x]` is how many of those occurrences are followed by a token (the sum of
the children's counts). Continuation probabilities use `out`, so an occurrence at the very
end of a sequence -- e.g. the context being matched itself -- never dilutes them.

When another sequence makes a leaf explicit and that leaf was the unique context at an open
sequence's last token, that sequence's `ends` gains the new node (`_materialize`), which
keeps every open sequence's `ends` exact under interleaved appends.
"""

from __future__ import annotations

import heapq
from array import array
from collections.abc import Iterable
from typing import Any

SHIFT = 32
MASK = (1 << SHIFT) - 1
ROOT = 0
WIDE = 32  # tree drafts take siblings only from nodes with at most this many children

Drafted = tuple[float, list[int], list[int] | None]  # (score, tokens, parents or None for a chain)


def _leaf(sid: int, pos: int) -> int:
    """Edge value of a leaf: negative, so `>= 0` means an explicit node id."""
    return ~(sid << SHIFT | pos)


class SuffixTree:
    """Counts of every substring (up to `max_depth` tokens) of a set of token sequences."""

    def __init__(self, max_depth: int) -> None:
        self.max_depth = max_depth
        # One row per node, in flat typed columns: 8 bytes a field and no int objects, which
        # also makes random access over millions of nodes faster than lists (fewer cache
        # misses). `kids` is None while the node has at most one child (then it is the `best`
        # one); `depth` is -1 for a released row awaiting reuse.
        self._kids: list[dict[int, int] | None] = [{}]  # token -> child node id, or a leaf (< 0)
        self._count = array("q", [1])  # the root's count is a sentinel that keeps it alive
        self._out = array("q", [0])
        self._best = array("q", [-1])  # the child token with the highest count (ties: the older)
        self._bestc = array("q", [0])  # ... its count (0: no child)
        self._bestk = array("q", [0])  # ... its edge (node id or leaf)
        self._depth = array("i", [0])
        self._free: list[int] = []
        # Wide nodes whose best child lost counts in a removal: rescanned when a draft reads
        # them, not at once (a hub can have thousands of children and lose counts often).
        self._stale: set[int] = set()
        self._seqs: dict[int, array[int]] = {}  # 4 bytes a token
        self._ends: dict[int, list[int]] = {}  # open sequences only
        self._next_sid = 0
        self.nodes = 1
        self.leaves = 0
        self.tokens = 0

    # -- size ---------------------------------------------------------------------------------
    @property
    def entries(self) -> int:
        """Explicit nodes plus leaf edges: what the memory bound counts."""
        return self.nodes + self.leaves

    def __len__(self) -> int:
        return len(self._seqs)

    def __contains__(self, sid: int) -> bool:
        return sid in self._seqs

    # -- sequences --------------------------------------------------------------------------
    def add(self) -> int:
        """Start an empty open sequence; returns its id (ids are never reused)."""
        sid = self._next_sid
        self._next_sid += 1
        self._seqs[sid] = array("i")
        self._ends[sid] = [ROOT]
        return sid

    def close(self, sid: int) -> None:
        """No more tokens for `sid`; it stays counted until `remove`."""
        self._ends.pop(sid, None)

    def ends(self, sid: int) -> list[int]:
        """Explicit nodes of the contexts ending at `sid`'s last token, by length (0 = root)."""
        return self._ends[sid]

    def growth_bound(self, sid: int, n: int) -> int:
        """At most how many entries appending `n` tokens to `sid` adds: one per context in
        `ends`, which grows by at most one per token, up to max_depth."""
        e, d = len(self._ends[sid]), self.max_depth
        k = max(0, min(n, d - e))  # tokens appended while `ends` is still below max_depth
        return k * e + k * (k - 1) // 2 + (n - k) * d

    def append(self, sid: int, tok: int) -> None:
        self.extend(sid, (tok,))

    def extend(self, sid: int, tokens: Iterable[int]) -> None:
        """Add tokens to open sequence `sid`: O(len(ends(sid))) <= O(max_depth) work each."""
        seq = self._seqs[sid]
        ends = self._ends[sid]
        kids, count, out = self._kids, self._count, self._out
        best, bestc, bestk = self._best, self._bestc, self._bestk
        max_depth = self.max_depth
        leaves = 0
        pos = start = len(seq)
        for tok in tokens:
            seq.append(tok)
            new = [ROOT]
            push = new.append
            leaf = 0
            for n in ends:
                out[n] += 1
                if best[n] == tok:
                    # Fast path, the usual case in repeated text: the most frequent child.
                    c = bestk[n]
                    if c < 0:
                        c = self._materialize(n, tok, c)
                    cnt = count[c] + 1
                    count[c] = bestc[n] = cnt
                    push(c)
                    continue
                k = kids[n]
                c = None if k is None else k.get(tok)
                if c is None:
                    # Unseen after this context, so after every longer one too: each gets a leaf.
                    if not leaf:
                        leaf = _leaf(sid, pos)
                    leaves += 1
                    if k is not None:
                        k[tok] = leaf
                    elif bestc[n]:
                        kids[n] = {best[n]: bestk[n], tok: leaf}  # a second child: now a dict
                    if not bestc[n]:
                        best[n], bestc[n], bestk[n] = tok, 1, leaf
                    continue
                if c < 0:
                    c = self._materialize(n, tok, c)
                cnt = count[c] + 1
                count[c] = cnt
                if cnt > bestc[n]:
                    best[n], bestc[n], bestk[n] = tok, cnt, c
                push(c)
            del new[max_depth:]  # a context of max_depth tokens cannot be extended
            ends = new
            pos += 1
        # Only now: `_materialize` may append to the `ends` of other sequences, never of this one.
        self._ends[sid] = ends
        self.leaves += leaves
        self.tokens = self.tokens + pos - start

    def _materialize(self, parent: int, tok: int, code: int) -> int:
        """Turn the leaf `parent -tok->` into an explicit node holding its one old occurrence.
        (Hot when a request repeats text seen once before: one call per context length.)"""
        v = ~code
        sid, pos = v >> SHIFT, v & MASK
        depth = self._depth[parent] + 1
        seq = self._seqs[sid]
        if pos + 1 < len(seq) and depth < self.max_depth:
            # The old occurrence's continuation becomes the new node's one child.
            out, best, bestc, bestk = 1, seq[pos + 1], 1, _leaf(sid, pos + 1)
        else:
            out, best, bestc, bestk = 0, -1, 0, 0
            self.leaves -= 1
        self.nodes += 1
        if self._free:
            x = self._free.pop()
            self._kids[x] = None
            self._count[x], self._out[x], self._best[x], self._bestc[x] = 1, out, best, bestc
            self._bestk[x], self._depth[x] = bestk, depth
        else:
            x = len(self._count)
            self._kids.append(None)
            self._count.append(1)
            self._out.append(out)
            self._best.append(best)
            self._bestc.append(bestc)
            self._bestk.append(bestk)
            self._depth.append(depth)
        k = self._kids[parent]
        if k is not None:
            k[tok] = x
        if self._best[parent] == tok:
            self._bestk[parent] = x
        if not out:
            ends = self._ends.get(sid)
            # The leaf was the unique context at the end of open sequence `sid`: it is now
            # explicit, so it belongs in that sequence's `ends` (always as its next length).
            if ends is not None and pos + 1 == len(seq) and len(ends) == depth < self.max_depth:
                ends.append(x)
        return x

    def remove(self, sid: int) -> None:
        """Forget sequence `sid` entirely: replays its contexts, decrementing; O(len x depth)."""
        seq = self._seqs.pop(sid)
        self._ends.pop(sid, None)
        self.tokens -= len(seq)
        kids, count, out, best, bestc, bestk = (
            self._kids, self._count, self._out, self._best, self._bestc, self._bestk,
        )
        stale: set[int] = set()  # nodes whose best child lost a count: another may lead now
        orphaned: set[int] = set()  # nodes whose best child is gone: `best` must not point to it
        dead: set[int] = set()  # released at the end: a periodic text revisits a node after it hits 0
        ends = [ROOT]
        for tok in seq:
            new = [ROOT]
            for n in ends:
                k = kids[n]
                c = bestk[n] if k is None else k[tok]
                out[n] -= 1
                cnt = count[c] - 1 if c >= 0 else 0  # a leaf holds exactly this occurrence
                if c >= 0:
                    count[c] = cnt
                else:
                    self.leaves -= 1
                if k is not None:
                    if not cnt:
                        del k[tok]
                    if best[n] == tok:
                        (stale if cnt else orphaned).add(n)
                elif cnt:
                    bestc[n] = cnt  # the only child stays the best
                else:
                    best[n], bestc[n], bestk[n] = -1, 0, 0
                if c >= 0:
                    if not cnt:
                        dead.add(c)
                    if self._depth[c] < self.max_depth:
                        new.append(c)  # even at count 0: its children are this sequence's too
            ends = new
        for x in dead:
            self._release(x)
        # Deferred so a node is rescanned once per removal, not once per occurrence.
        for n in orphaned:
            if self._depth[n] >= 0:
                self._rescan(n)
        for n in stale - orphaned:
            if self._depth[n] < 0:
                continue
            kids_n = kids[n]
            if kids_n is not None and len(kids_n) > WIDE:
                self._stale.add(n)  # still a valid child, just maybe no longer the best
            else:
                self._rescan(n)

    def _release(self, x: int) -> None:
        self._stale.discard(x)
        self._kids[x] = None
        self._depth[x] = -1
        self._free.append(x)
        self.nodes -= 1

    def _rescan(self, n: int) -> None:
        self._stale.discard(n)
        bt, bc, bk = -1, 0, 0
        count = self._count
        for t, c in self._edges(n).items():
            cc = count[c] if c >= 0 else 1
            if cc > bc:
                bt, bc, bk = t, cc, c
        self._best[n], self._bestc[n], self._bestk[n] = bt, bc, bk

    def _edges(self, n: int) -> dict[int, int]:
        k = self._kids[n]
        if k is not None:
            return k
        return {self._best[n]: self._bestk[n]} if self._bestc[n] else {}

    # -- drafting ---------------------------------------------------------------------------
    def best_draft(
        self, sid: int, limit: int, factor: float, offset: float, min_prob: float, best_score: float, branching: int
    ) -> Drafted | None:
        """The highest-scoring draft over every useful match length of `sid`'s recent tokens
        that beats `best_score`, as (score, tokens, parents); `branching` 0 means a chain.

        A match of m tokens may draft min(limit, factor * m + offset) tokens, and no deeper
        than max_depth. Longest match first; a shorter match whose context has the same
        continuation count as the longer one has the same occurrences, hence the same draft
        with a smaller cap, and is skipped (unless the longer one ran out of depth); once the
        cap itself cannot beat the best score, no shorter match can.
        """
        out, bestc, stale = self._out, self._bestc, self._stale
        ends = self._ends[sid]
        max_depth = self.max_depth
        best: Drafted | None = None
        prev_out = -1
        prev_room_bound = False
        m = len(ends)
        for node in reversed(ends):  # the context of the last m tokens, longest first
            m -= 1
            cap = int(factor * m + offset)
            if cap > limit:
                cap = limit
            if cap <= best_score or not m:
                break
            o = out[node]
            if not o or (o == prev_out and not prev_room_bound):
                continue
            prev_out = o
            room = max_depth - m
            prev_room_bound = room < cap
            n = room if prev_room_bound else cap
            if stale and node in stale:
                self._rescan(node)
            if n * bestc[node] <= best_score * o:
                continue  # every path probability is at most the first token's
            if branching:
                tokens, parents, score = self.tree(node, n, min_prob, branching)
            else:
                (tokens, score), parents = self.chain(node, n, min_prob), None
            if tokens and score > best_score:
                best, best_score = (score, tokens, parents), score
        return best

    def chain(self, node: int, limit: int, min_prob: float) -> tuple[list[int], float]:
        """Greedy continuation of `node`: the most frequent child each step, while the path
        probability stays >= `min_prob`; returns (tokens, sum of path probabilities)."""
        out, best, bestc, bestk = self._out, self._best, self._bestc, self._bestk
        toks: list[int] = []
        p = 1.0
        score = 0.0
        stale = self._stale
        while len(toks) < limit:
            o = out[node]
            if not o:
                break
            if stale and node in stale:
                self._rescan(node)
            p *= bestc[node] / o
            if p < min_prob:
                break
            toks.append(best[node])
            score += p
            c = bestk[node]
            if c < 0:
                # A leaf: one occurrence, so each further token has probability 1 (up to depth).
                v = ~c
                seq, pos = self._seqs[v >> SHIFT], v & MASK
                room = min(limit - len(toks), self.max_depth - self._depth[node] - 1)
                more = seq[pos + 1 : pos + 1 + room]
                toks.extend(more)
                score += p * len(more)
                break
            node = c
        return toks, score

    def tree(self, node: int, limit: int, min_prob: float, branching: int) -> tuple[list[int], list[int], float]:
        """Best-first tree below `node`: up to `branching` children per node, nodes taken by
        path probability (>= `min_prob`) until `limit`; returns (tokens, parents, score).
        Each node's first child is its most frequent one, so the first chain is `chain`'s."""
        toks: list[int] = []
        parents: list[int] = []
        score = 0.0
        heap: list[tuple[float, int, int, int, int, int]] = []  # (-p, order, parent, token, edge, depth)
        order = 0

        def expand(code: int, d: int, p: float, at: int) -> None:
            nonlocal order
            for tok, child, q in self._options(code, d, branching):
                if p * q >= min_prob:
                    heapq.heappush(heap, (-p * q, order, at, tok, child, d + 1))
                    order += 1

        expand(node, self._depth[node], 1.0, -1)
        while heap and len(toks) < limit:
            negp, _, parent, tok, code, d = heapq.heappop(heap)
            toks.append(tok)
            parents.append(parent)
            score -= negp
            expand(code, d, -negp, len(toks) - 1)
        return toks, parents, score

    def _options(self, code: int, d: int, branching: int) -> list[tuple[int, int, float]]:
        """(token, child edge, conditional probability) of the continuations to consider
        after the string at `code` (of length `d`): the best child first."""
        if d >= self.max_depth:
            return []
        if code < 0:  # inside a leaf's chain: the next token of its one occurrence
            v = ~code
            sid, pos = v >> SHIFT, v & MASK
            seq = self._seqs[sid]
            return [(seq[pos + 1], _leaf(sid, pos + 1), 1.0)] if pos + 1 < len(seq) else []
        o = self._out[code]
        if not o:
            return []
        if code in self._stale:
            self._rescan(code)
        top = self._best[code]
        picks = [(top, self._bestk[code], self._bestc[code])]
        kids = self._kids[code]
        if branching > 1 and kids is not None and len(kids) <= WIDE:
            count = self._count
            rest = [(count[c] if c >= 0 else 1, t, c) for t, c in kids.items() if t != top]
            picks += [(t, c, cc) for cc, t, c in heapq.nlargest(branching - 1, rest)]
        return [(t, c, cc / o) for t, c, cc in picks]

    # -- inspection -------------------------------------------------------------------------
    def sequences(self) -> dict[int, list[int]]:
        return {sid: list(s) for sid, s in self._seqs.items()}


# -- the compiled core ----------------------------------------------------------------------
# `_suffix_core.SuffixTree` (C sources in spec_sdk/proposers/csrc/suffix/, built by setup.py
# where a C compiler is there; typed in _suffix_core.pyi) is this class in C: same methods,
# same results to the last bit (tests compare the two on random operation streams), ~10x
# faster. It has none of the private columns above (`_count`, `_kids`, ...); its invariants
# are checked by its `_check()`, and `_suffix_core.set_wide(n)` is its `WIDE`.
CSuffixTree: type[Any] | None
try:
    from spec_sdk.proposers._suffix_core import SuffixTree as CSuffixTree
except ImportError:  # not built: "auto" falls back to this module's class
    CSuffixTree = None

CORES = ("auto", "c", "python")


def resolve_core(core: str) -> str:
    """"c" or "python": which class `make_tree(..., core)` builds ("auto": C when built)."""
    if core not in CORES:
        raise ValueError(f"core must be one of {CORES}, got {core!r}")
    if core == "auto":
        return "python" if CSuffixTree is None else "c"
    if core == "c" and CSuffixTree is None:
        raise ValueError("the compiled suffix core is not built (pip install -e . with a C compiler)")
    return core


def make_tree(max_depth: int, core: str = "auto") -> SuffixTree:
    """A SuffixTree, or its compiled twin (same API; typed as the Python class)."""
    cls = CSuffixTree if resolve_core(core) == "c" else SuffixTree
    return cls(max_depth)  # type: ignore[no-any-return]
