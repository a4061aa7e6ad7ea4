"""Suffix decoding: propose what followed the current context before, in this request and in
the outputs of other requests (earlier and concurrently running ones).

Two suffix tries (`suffix_tree.SuffixTree`, or its compiled twin `_suffix_core.SuffixTree`:
option `core`, "auto" by default, i.e. the C one when it was built), queried the same way:
- a *local* one per request over its own prompt and output, dropped when it finishes;
- one *global* one shared by every request this proposer instance serves: each request's
  output, preceded by the last `global_prompt_tail` tokens of its prompt, added token by
  token while it runs and kept after it finishes, until evicted (FIFO, whole requests)
  to stay within `max_cached_requests` and `max_cached_nodes`.

Why outputs and only a prompt tail in the global trie: prompts are long and each request's
own prompt is already in its local trie; in the global one they would multiply its size and
cost and fill the counts with text no one is generating. The short tail lets a response's
opening be predicted from how other responses to similarly ending prompts began.

Per step, for each trie: the candidate contexts are the trie's nodes for the request's
recent tokens, one per length (the trie tracks them as tokens arrive, so nothing is searched).
Each context's draft follows the most frequent continuations (probability = child count /
parent's continuation count, multiplied down the path) while the path probability stays >=
`min_token_prob`, capped at `max_spec_factor * match_len + max_spec_offset` tokens and the
budget. `Draft.score` is the sum of the path probabilities (expected accepted tokens); the
best draft over every match length and both tries wins. Match lengths whose contexts have
the same continuation count as a longer one have the same continuations, so they are
skipped, and the search stops once no shorter match could be allowed a higher score.

A request's own text is in the global trie too, but only as occurrences: its latest
context has no continuation yet, and probabilities count continuations only, so it never
matches itself trivially; its earlier text counts like anyone's.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Any

import torch

from spec_sdk.errors import ConfigError
from spec_sdk.proposers.base import RequestView
from spec_sdk.proposers.suffix_tree import CORES, SuffixTree, make_tree, resolve_core
from spec_sdk.types import Draft


class _Req:
    """What the proposer holds for one running request."""

    __slots__ = ("local", "lsid", "gsid", "seen")

    def __init__(self, max_depth: int, core: str) -> None:
        self.local: SuffixTree = make_tree(max_depth, core)
        self.lsid = self.local.add()
        self.gsid: int | None = None  # its sequence in the global trie (None: not there, or evicted)
        self.seen = 0  # tokens of the request already added to the tries


class SuffixProposer:
    """Suffix-trie proposer over the request's own text and a cross-request cache.

    Options: `max_depth` (longest context + draft, in tokens); `max_cached_requests` and
    `max_cached_nodes` (bounds of the global cache, in requests and in trie entries);
    `max_spec_factor`, `max_spec_offset` (a match of m tokens drafts at most factor * m +
    offset); `min_token_prob` (floor on a draft token's path probability); `tree` (draft
    trees instead of chains), `max_tree_nodes` and `branching` (children per node);
    `use_global` (False: each request's own text only); `global_prompt_tail` (prompt tokens
    put before each output in the global cache); `core` ("auto", "c", "python": the
    compiled trie or the pure-Python one -- same drafts, bit for bit; "auto" takes the
    compiled one when it is built).

    One instance serves many requests and engines; its global cache lives as long as it
    does. `stats()` reports the caches' sizes and the core.
    """

    name = "suffix"
    needs_hidden_states = False

    def __init__(
        self,
        *,
        max_depth: int = 64,
        max_cached_requests: int = 10_000,
        max_cached_nodes: int = 4_000_000,
        max_spec_factor: float = 1.0,
        max_spec_offset: float = 0.0,
        min_token_prob: float = 0.1,
        tree: bool = False,
        max_tree_nodes: int = 32,
        branching: int = 3,
        use_global: bool = True,
        global_prompt_tail: int = 16,
        core: str = "auto",
    ) -> None:
        _int("max_depth", max_depth, 2)
        _int("max_cached_requests", max_cached_requests, 1)
        _int("max_cached_nodes", max_cached_nodes, 1)
        _int("max_tree_nodes", max_tree_nodes, 1)
        _int("branching", branching, 1)
        _int("global_prompt_tail", global_prompt_tail, 0)
        _number("max_spec_factor", max_spec_factor, 0.0)
        _number("max_spec_offset", max_spec_offset, -math.inf)
        _number("min_token_prob", min_token_prob, 0.0)
        if min_token_prob > 1.0:
            raise ConfigError(f"suffix min_token_prob must be in [0, 1], got {min_token_prob!r}")
        for label, flag in (("tree", tree), ("use_global", use_global)):
            if not isinstance(flag, bool):
                raise ConfigError(f"suffix {label} must be a bool, got {flag!r}")
        if not isinstance(core, str) or core not in CORES:
            raise ConfigError(f"suffix core must be one of {CORES}, got {core!r}")
        try:
            self.core = resolve_core(core)  # "c" or "python"
        except ValueError as e:
            raise ConfigError(f"suffix core {core!r}: {e}") from None
        self.max_depth = max_depth
        self.max_cached_requests = max_cached_requests
        self.max_cached_nodes = max_cached_nodes
        self.max_spec_factor = float(max_spec_factor)
        self.max_spec_offset = float(max_spec_offset)
        self.min_token_prob = float(min_token_prob)
        self.tree = tree
        self.max_tree_nodes = max_tree_nodes
        self.branching = branching
        self.use_global = use_global
        self.global_prompt_tail = global_prompt_tail
        self.cache: SuffixTree = make_tree(max_depth, self.core)
        self._fifo: deque[int] = deque()  # global sequences, oldest first
        self._reqs: dict[str, _Req] = {}
        self.evicted = 0

    # -- the Proposer protocol ---------------------------------------------------------------
    def start(self, req: RequestView) -> None:
        self._state(req)

    def propose(self, reqs: Sequence[RequestView], budgets: Sequence[int]) -> list[Draft | None]:
        return [self._propose_one(req, budget) for req, budget in zip(reqs, budgets)]

    def observe(self, req: RequestView, accepted: Sequence[int], hidden: torch.Tensor | None) -> None:
        # Read from `req.tokens` rather than `accepted`: the same catch-up serves a missed call.
        st = self._reqs.get(req.id)
        if st is None or st.seen > len(req.tokens):
            st = self._state(req)
        self._sync(st, req)

    def finish(self, req: RequestView) -> None:
        st = self._reqs.pop(req.id, None)
        if st is None:
            return
        self._sync(st, req)
        if st.gsid is not None and st.gsid in self.cache:
            self.cache.close(st.gsid)  # stays cached until evicted

    # -- memory -------------------------------------------------------------------------------
    def stats(self) -> dict[str, Any]:
        """Sizes of the caches (entries = explicit nodes + leaves; what the bounds count) and
        which trie implementation runs ("c" or "python")."""
        local = [st.local for st in self._reqs.values()]
        return {
            "core": self.core,
            "cached_requests": len(self.cache),
            "running_requests": len(self._reqs),
            "evicted_requests": self.evicted,
            "global_entries": self.cache.entries,
            "global_nodes": self.cache.nodes,
            "global_leaves": self.cache.leaves,
            "global_tokens": self.cache.tokens,
            "local_entries": sum(t.entries for t in local),
            "local_tokens": sum(t.tokens for t in local),
            "max_cached_requests": self.max_cached_requests,
            "max_cached_nodes": self.max_cached_nodes,
        }

    memory = stats

    def clear(self) -> None:
        """Evict every request from the global cache (running ones stop adding to it)."""
        while self._fifo:
            self._evict()

    # -- internals ---------------------------------------------------------------------------
    def _state(self, req: RequestView) -> _Req:
        st = self._reqs.get(req.id)
        # Tolerate a missed `start`, and a request id reused for a shorter request.
        if st is None or st.seen > len(req.tokens):
            if st is not None and st.gsid is not None and st.gsid in self.cache:
                self.cache.close(st.gsid)
            st = self._reqs[req.id] = _Req(self.max_depth, self.core)
            if self.use_global:
                while len(self._fifo) >= self.max_cached_requests:
                    self._evict()
                st.gsid = self.cache.add()
                self._fifo.append(st.gsid)
            self._sync(st, req)
        return st

    def _sync(self, st: _Req, req: RequestView) -> None:
        """Add the request's tokens that the tries have not seen yet."""
        tokens = req.tokens
        n = len(tokens)
        if n <= st.seen:
            return
        new = tokens[st.seen : n]
        st.local.extend(st.lsid, new)
        if st.gsid is not None:
            first = max(st.seen, req.prompt_len - self.global_prompt_tail)
            if first < n:
                self._global_extend(st, tokens[first:n] if first != st.seen else new)
        st.seen = n

    def _global_extend(self, st: _Req, new: list[int]) -> None:
        gsid = st.gsid
        cache = self.cache
        if gsid not in cache:
            st.gsid = None  # evicted while running: its local trie still serves it
            return
        # Evict whole requests, oldest first, until the worst-case growth fits (the cruder
        # bound first: it almost always fits, and costs less than the exact one).
        if cache.entries + len(new) * self.max_depth > self.max_cached_nodes:
            while cache.entries + cache.growth_bound(gsid, len(new)) > self.max_cached_nodes:  # type: ignore[arg-type]
                if self._evict() == gsid:
                    st.gsid = None
                    return
        cache.extend(gsid, new)  # type: ignore[arg-type]

    def _evict(self) -> int:
        sid = self._fifo.popleft()
        self.cache.remove(sid)
        self.evicted += 1
        return sid

    def _propose_one(self, req: RequestView, budget: int) -> Draft | None:
        if budget <= 0:
            return None
        st = self._reqs.get(req.id)
        if st is None or st.seen != len(req.tokens):
            st = self._state(req)
            self._sync(st, req)
        # Tree mode drafts up to `max_tree_nodes` nodes, chain mode the greedy path.
        limit = min(budget, self.max_tree_nodes) if self.tree else budget
        branching = self.branching if self.tree else 0
        args = (limit, self.max_spec_factor, self.max_spec_offset, self.min_token_prob)
        best = st.local.best_draft(st.lsid, *args, 0.0, branching)
        if st.gsid is not None:
            if st.gsid in self.cache:
                floor = best[0] if best is not None else 0.0
                best = self.cache.best_draft(st.gsid, *args, floor, branching) or best
            else:
                st.gsid = None
        if best is None:
            return None
        score, tokens, parents = best
        return _draft(tokens, parents, score, self.name)


# Draft's slot setters (a test checks that these are all of Draft's fields).
_set_tokens, _set_parents, _set_probs, _set_score, _set_source = (
    getattr(Draft, name).__set__ for name in ("tokens", "parents", "probs", "score", "source")
)


def _draft(tokens: list[int], parents: list[int] | None, score: float, source: str) -> Draft:
    """`Draft(...)` without its converters and checks, which cost five times this, as much as
    the lookups in both tries: the tries give Python ints, and parents before their children."""
    d = object.__new__(Draft)
    _set_tokens(d, tuple(tokens))
    _set_parents(d, None if parents is None else tuple(parents))
    _set_probs(d, None)
    _set_score(d, score)
    _set_source(d, source)
    return d


def _int(label: str, value: object, lo: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ConfigError(f"suffix {label} must be an int >= {lo}, got {value!r}")


def _number(label: str, value: object, lo: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < lo:
        raise ConfigError(f"suffix {label} must be a finite number >= {lo}, got {value!r}")

