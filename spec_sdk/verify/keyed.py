"""Sampling draws keyed by what they decide, so that runs that differ only in how they
speculate share their randomness (common random numbers).

A request used to draw its uniforms from one generator in turn. How many a step took depended
on how many draft tokens it verified, so the same seed gave different text at k=3 and at k=4,
and a benchmark comparing the two compared two draws of the text as much as two draft lengths:
sampled lanes of one draft model ran 1.24x to 1.30x on one seed.

Here every uniform is a hash of the request's seed and a key:

- a token's own draw at position t (`TOKEN`, see DrawBook): keyed by t and the tokens before it.
  A sampling proposer draws its draft token with it, and the target its own token -- the one a
  step emits after the last draft token, or with no draft;
- a sampled draft token's acceptance test at t (`ACCEPT`) and the residual's draw where it was
  rejected (`EMIT`); a deterministic tree node's test (`TREE` + its rank among its siblings).

How the chain sampler (spec_sdk.verify.chain) uses them:

- a deterministic draft (no `probs`), or none: the target's token at each position is its own
  draw; draft tokens are accepted while they equal it, and the step emits it where they first
  differ (or after the last). Accepted with probability p(d), the residual's law where not: the
  textbook rule's law exactly, and the text is the one the target alone writes from that seed;
- a sampled draft: the textbook rule (test min(1, p/q), the residual's draw at a rejection), the
  target's own draw after the last draft token. The proposer drew the draft token with the same
  key, so where its q is close to p the token comes out as the target alone would draw it.

Why this stays lossless. Speculative sampling is exact when, at every position, the uniforms that
decide it are fresh given everything seen so far, and a sampled draft token follows the `q` it
reports given everything that decided to draft it. A position's test, residual draw and target
draw matter only once the position is reached, and it is then emitted and never decided again;
the draws of positions past a step's first rejection are computed but seen by no one (a verdict
reports how many were accepted, and probabilities, never the draws). A proposer's draft token is
seen as soon as it is made (the policy weighs its chances, drafts in hand are scored in
hindsight), so its key is never used twice: a (position, context) drawn again draws with a count
in its key, and the target's draw after it with the count as it then stands.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import attrs
import torch
from torch import Tensor

from spec_sdk.verify.warp import uniforms

ACCEPT = 1  # a sampled draft token's acceptance test
EMIT = 2  # the residual's draw where a sampled draft token was rejected; a tree row's emission
TOKEN = 3  # a token's own draw: a sampling proposer's draft token, or the target's (DrawBook)
TREE = 16  # + rank: a deterministic tree node's test, by its rank among its siblings

_MASK = (1 << 64) - 1
DRAFT_CONTEXT = 8  # the tokens before a position that its TOKEN key depends on


def _mix(z: int) -> int:
    """SplitMix64's finaliser: a 64-bit bijection whose every output bit depends on every input bit."""
    z = (z + 0x9E3779B97F4A7C15) & _MASK
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK
    return z ^ (z >> 31)


def keyed_uniform(seed: int, *key: int) -> float:
    """A uniform in [0, 1) that depends only on `seed` and `key` (53 bits, as float64 has)."""
    z = _mix(seed & _MASK)
    for part in key:
        z = _mix(z ^ (part & _MASK))
    return (z >> 11) * (1.0 / (1 << 53))


def fresh_seed() -> int:
    """A seed for a request that gave none: OS entropy, so unseeded requests still differ."""
    return int.from_bytes(os.urandom(8), "little") >> 1


def _context(before: Sequence[int]) -> int:
    return hash(tuple(before[-DRAFT_CONTEXT:]))


@attrs.define(eq=False)
class DrawBook:
    """A request's token draws (module docstring): the draw for the token at position t after
    the tokens `before` is keyed by (t, the last `DRAFT_CONTEXT` of `before`, how often a
    proposer drew there already). A proposer's draw counts; the target's does not: it is used
    once (its position is then emitted) or never seen."""

    seed: int
    _drawn: dict[tuple[int, int], int] = attrs.field(factory=dict)

    def draft(self, t: int, before: Sequence[int]) -> float:
        """A sampling proposer's draw for its token at `t`; `before`: the tokens before it (the
        request's and the draft's so far), its last `DRAFT_CONTEXT` at least."""
        key = (t, _context(before))
        n = self._drawn.get(key, 0)
        self._drawn[key] = n + 1
        return keyed_uniform(self.seed, t, TOKEN, key[1], n)

    def plain(self, t: int, before: Sequence[int]) -> float:
        """The target's own draw for its token at `t`."""
        h = _context(before)
        return keyed_uniform(self.seed, t, TOKEN, h, self._drawn.get((t, h), 0))

    def passed(self, length: int) -> None:
        """The request is `length` tokens long: counts of earlier positions are never asked again."""
        if len(self._drawn) > 64:
            self._drawn = {key: n for key, n in self._drawn.items() if key[0] >= length}


@attrs.frozen
class Keyed:
    """A request's keyed draws for one step: `start` is the position of the step's first new
    token (the request's length before it), `tail` the request's last tokens before it."""

    book: DrawBook
    start: int
    tail: Sequence[int]

    def at(self, keys: Sequence[tuple[int, int]]) -> Tensor:
        """float64 uniforms, on the CPU, for (offset from `start`, purpose) pairs."""
        seed, start = self.book.seed, self.start
        return torch.tensor([keyed_uniform(seed, start + o, p) for o, p in keys], dtype=torch.float64)

    def plains(self, path: Sequence[int]) -> Tensor:
        """The target's own draws at offsets 0..len(path), the tokens before each being `path`'s."""
        before = list(self.tail[-DRAFT_CONTEXT:])
        out = []
        for i in range(len(path) + 1):
            out.append(self.book.plain(self.start + i, before))
            if i < len(path):
                before.append(path[i])
        return torch.tensor(out, dtype=torch.float64)

    def after(self, path: Sequence[int]) -> Tensor:
        """The target's own draw after `path` alone (offset len(path)): the last of `plains`."""
        before = [*self.tail[-DRAFT_CONTEXT:], *path]
        return torch.tensor([self.book.plain(self.start + len(path), before)], dtype=torch.float64)


# what a request's verification draws from: keyed draws (the engine's), or a generator in turn
Source = torch.Generator | Keyed | None


def chain_draws(source: Source, path: Sequence[int], sampled: bool) -> tuple[Tensor, Tensor, Tensor]:
    """A request's uniforms for a chain step with draft tokens `path` (n of them): the n
    acceptance tests, the n residual draws, and the target's own draws the step can use -- at
    every offset 0..n for a deterministic draft (what it is matched against), at offset n alone
    for a `sampled` one (after its last token). Keyed, a deterministic draft's tests and residual
    draws are never used and not drawn (zeros). A generator (or None: torch's global one) draws
    all 3n + 1 in turn whatever is used, so it advances the same way whatever is accepted."""
    n = len(path)
    if isinstance(source, Keyed):
        if not sampled:
            return torch.zeros(n, dtype=torch.float64), torch.zeros(n, dtype=torch.float64), source.plains(path)
        return source.at([(i, ACCEPT) for i in range(n)]), source.at([(i, EMIT) for i in range(n)]), source.after(path)
    u = uniforms(source, 3 * n + 1).cpu()
    return u[:n], u[n : 2 * n], u[3 * n :] if sampled else u[2 * n :]


def tree_draws(source: Source, tests: Sequence[tuple[int, int]], rows: Sequence[int]) -> tuple[Tensor, Tensor]:
    """A request's uniforms for a deterministic tree: one per node test, as (offset, purpose),
    and one per row (offset where the step would emit if the path ended there). A generator
    draws a uniform per test and then one emission uniform for every row."""
    if isinstance(source, Keyed):
        return source.at(tests), source.at([(o, EMIT) for o in rows])
    u = uniforms(source, len(tests) + 1).cpu()
    return u[: len(tests)], u[len(tests):].expand(len(rows))
