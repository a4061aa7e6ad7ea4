"""Value types that flow between the engine, proposers, verifiers and backends.

All of them are attrs classes validated on construction, so a bad value fails where it is
made rather than deep inside the step loop.
"""

from __future__ import annotations

import math
from typing import Any, Literal, Sequence

import attrs
import torch

from spec_sdk.errors import InvalidRequestError

FinishReason = Literal["length", "eos", "stop", "cancelled", "error"]


def _int_tuple(values: Any) -> tuple[int, ...]:
    if isinstance(values, torch.Tensor):
        return tuple(int(v) for v in values.reshape(-1).tolist())
    return tuple(int(v) for v in values)


def _opt_int_tuple(values: Any) -> tuple[int, ...] | None:
    return None if values is None else _int_tuple(values)


def _str_tuple(values: Any) -> tuple[str, ...]:
    if isinstance(values, str):
        return (values,)
    return tuple(str(v) for v in values)


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise InvalidRequestError(msg)


@attrs.frozen
class SamplingParams:
    """How to pick each token. `temperature == 0` means greedy.

    Warping order matches transformers' `generate`: temperature, then top-k, top-p, min-p.
    """

    temperature: float = 0.0
    top_k: int = 0
    top_p: float = 1.0
    min_p: float = 0.0
    max_new_tokens: int = 64
    stop_token_ids: tuple[int, ...] = attrs.field(default=(), converter=_int_tuple)
    stop: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    seed: int | None = None
    ignore_eos: bool = False

    def __attrs_post_init__(self) -> None:
        _check(
            isinstance(self.temperature, (int, float))
            and math.isfinite(self.temperature)
            and self.temperature >= 0,
            f"temperature must be a finite number >= 0, got {self.temperature!r}",
        )
        _check(isinstance(self.top_k, int) and self.top_k >= 0, f"top_k must be an int >= 0, got {self.top_k!r}")
        _check(0.0 < self.top_p <= 1.0, f"top_p must be in (0, 1], got {self.top_p!r}")
        _check(0.0 <= self.min_p <= 1.0, f"min_p must be in [0, 1], got {self.min_p!r}")
        _check(
            isinstance(self.max_new_tokens, int) and self.max_new_tokens >= 1,
            f"max_new_tokens must be an int >= 1, got {self.max_new_tokens!r}",
        )
        _check(all(s for s in self.stop), "stop strings must be non-empty")
        _check(
            self.seed is None or (isinstance(self.seed, int) and self.seed >= 0),
            f"seed must be None or an int >= 0, got {self.seed!r}",
        )

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


@attrs.frozen(eq=False)
class Draft:
    """A proposer's guess: a chain (`parents is None`) or a tree of tokens.

    `parents[i]` is the index of node i's parent, -1 for a child of the root (the request's
    last token); parents always come before their children. `probs[i]` is the distribution
    node i's token was really drawn from (after the same warping as the target); `None`
    means a deterministic proposer, treated as a one-hot `q`. `score` is the proposer's
    estimate of how many tokens will be accepted.
    """

    tokens: tuple[int, ...] = attrs.field(converter=_int_tuple)
    parents: tuple[int, ...] | None = attrs.field(default=None, converter=_opt_int_tuple)
    probs: torch.Tensor | None = None
    score: float = 0.0
    source: str = ""

    def __attrs_post_init__(self) -> None:
        n = len(self.tokens)
        if self.parents is not None:
            _check(len(self.parents) == n, "Draft.parents must have one entry per token")
            for i, p in enumerate(self.parents):
                _check(-1 <= p < i, f"Draft.parents[{i}]={p} must point to an earlier node or -1")
        if self.probs is not None:
            _check(
                self.probs.dim() == 2 and self.probs.shape[0] == n,
                f"Draft.probs must have shape [n={n}, V], got {tuple(self.probs.shape)}",
            )

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def is_chain(self) -> bool:
        return self.parents is None or all(p == i - 1 for i, p in enumerate(self.parents))

    def truncated(self, k: int) -> Draft:
        """The first `k` nodes (a tree keeps only nodes whose parents survive, which is all of a prefix)."""
        if k >= len(self.tokens):
            return self
        return Draft(
            tokens=self.tokens[:k],
            parents=None if self.parents is None else self.parents[:k],
            probs=None if self.probs is None else self.probs[:k],
            score=min(self.score, float(k)),
            source=self.source,
        )


def first_chain(draft: Draft) -> Draft:
    """The chain that follows each node's first child: what a chain-only backend can verify."""
    if draft.is_chain:
        return draft
    assert draft.parents is not None
    keep = []
    want = -1
    for i, p in enumerate(draft.parents):
        if p == want:
            keep.append(i)
            want = i
    return Draft(
        tokens=[draft.tokens[i] for i in keep],
        probs=None if draft.probs is None else draft.probs[keep],
        score=draft.score,
        source=draft.source,
    )


def _float_tuple(values: Any) -> tuple[float, ...]:
    return tuple(float(v) for v in values)


@attrs.frozen
class Verdict:
    """What verification decided: the accepted draft nodes (`path`, root to leaf) and the
    tokens to emit (the accepted draft tokens plus one token from the target).

    Under rejection sampling of a chain, also per draft position j: `token_chances[j]`, the
    chance its drawn token was accepted, min(1, p(x)/q(x)), and `chances[j]`, the chance any
    token the draft could have drawn there is, sum over x of min(p(x), q(x)) -- given the
    draft's earlier tokens. What acceptance was to be expected, against the one draw of it that
    happened: a learner of acceptance rates gets the same mean from far fewer drafts. Empty for
    greedy verification (acceptance there is not random) and for sampled trees without probs
    (a tree with probs is sampled as its first chain, and its chances are that chain's)."""

    path: tuple[int, ...] = attrs.field(converter=_int_tuple)
    tokens: tuple[int, ...] = attrs.field(converter=_int_tuple)
    # not part of what was decided: two verdicts that accept and emit the same are equal
    token_chances: tuple[float, ...] = attrs.field(default=(), converter=_float_tuple, eq=False)
    chances: tuple[float, ...] = attrs.field(default=(), converter=_float_tuple, eq=False)

    def __attrs_post_init__(self) -> None:
        _check(len(self.tokens) == len(self.path) + 1, "Verdict emits exactly one token past the path")

    @property
    def num_accepted(self) -> int:
        return len(self.path)


@attrs.define
class StepTimes:
    """Seconds spent in each phase of the step loop."""

    propose: float = 0.0
    score: float = 0.0
    verify: float = 0.0
    bookkeeping: float = 0.0

    def add(self, other: StepTimes) -> None:
        self.propose += other.propose
        self.score += other.score
        self.verify += other.verify
        self.bookkeeping += other.bookkeeping

    @property
    def total(self) -> float:
        return self.propose + self.score + self.verify + self.bookkeeping

    def shares(self) -> dict[str, float]:
        total = self.total or 1.0
        return {k: v / total for k, v in attrs.asdict(self).items()}


@attrs.define
class SpecStats:
    """Counters of speculation: per request, per proposer, or for the whole engine."""

    steps: int = 0  # target forwards
    drafts: int = 0  # steps that verified a non-empty draft
    drafted: int = 0  # draft tokens sent to verification
    accepted: int = 0  # draft tokens accepted
    emitted: int = 0  # tokens produced (accepted + one per step)
    accepted_per_position: list[int] = attrs.field(factory=list)
    drafted_per_position: list[int] = attrs.field(factory=list)
    proposer_errors: int = 0
    times: StepTimes = attrs.field(factory=StepTimes)

    def record(self, drafted: int, accepted: int, emitted: int) -> None:
        self.steps += 1
        self.emitted += emitted
        if drafted == 0:
            return
        self.drafts += 1
        self.drafted += drafted
        self.accepted += accepted
        _bump(self.drafted_per_position, drafted)
        _bump(self.accepted_per_position, accepted)

    def merge(self, other: SpecStats) -> None:
        self.steps += other.steps
        self.drafts += other.drafts
        self.drafted += other.drafted
        self.accepted += other.accepted
        self.emitted += other.emitted
        self.proposer_errors += other.proposer_errors
        _add_lists(self.accepted_per_position, other.accepted_per_position)
        _add_lists(self.drafted_per_position, other.drafted_per_position)
        self.times.add(other.times)

    @property
    def mean_accepted_length(self) -> float:
        """MAL: tokens emitted per target forward."""
        return self.emitted / self.steps if self.steps else 0.0

    @property
    def acceptance_rate(self) -> float:
        return self.accepted / self.drafted if self.drafted else 0.0

    def acceptance_by_position(self) -> list[float]:
        return [a / d if d else 0.0 for a, d in zip(self.accepted_per_position, self.drafted_per_position)]

    def as_dict(self) -> dict[str, Any]:
        out = attrs.asdict(self)
        out["mean_accepted_length"] = self.mean_accepted_length
        out["acceptance_rate"] = self.acceptance_rate
        out["acceptance_by_position"] = self.acceptance_by_position()
        return out


def _bump(counts: list[int], upto: int) -> None:
    """Add one to positions [0, upto)."""
    if len(counts) < upto:
        counts.extend([0] * (upto - len(counts)))
    for i in range(upto):
        counts[i] += 1


def _add_lists(into: list[int], other: Sequence[int]) -> None:
    if len(into) < len(other):
        into.extend([0] * (len(other) - len(into)))
    for i, v in enumerate(other):
        into[i] += v


@attrs.frozen
class TokenChunk:
    """One item of a stream: the tokens one step produced, their text, and (on the last
    chunk) why the request finished."""

    request_id: str
    token_ids: tuple[int, ...] = attrs.field(converter=_int_tuple)
    text: str = ""
    finish_reason: FinishReason | None = None
    accepted: int = 0  # how many of `token_ids` came from an accepted draft


@attrs.frozen(eq=False)
class Completion:
    """A finished request."""

    request_id: str
    prompt_ids: tuple[int, ...] = attrs.field(converter=_int_tuple)
    token_ids: tuple[int, ...] = attrs.field(converter=_int_tuple)
    text: str | None
    finish_reason: FinishReason
    stats: SpecStats
