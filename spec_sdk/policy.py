"""Policies: per request and step, which proposers to ask, with what budget, and which draft to use."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from typing import Final, Literal, Protocol, runtime_checkable

import attrs

from spec_sdk.cascade_rate import Asked, StageRates
from spec_sdk.errors import ConfigError
from spec_sdk.proposers.base import RequestView
from spec_sdk.types import Draft, first_chain


class _Defer(enum.Enum):
    """Returned by `Policy.choose` to ask the request's next planned proposer before deciding."""

    DEFER = "defer"


DEFER: Final = _Defer.DEFER
"""Returned by `Policy.choose` to ask the request's next planned proposer before deciding."""


@attrs.frozen
class Load:
    """What the engine looks like this step, for policies that adapt to load."""

    batch_size: int
    waiting: int = 0


@attrs.frozen
class Outcome:
    """What became of one request's draft this step."""

    request_id: str
    proposer: str | None  # whose draft was verified; None: no speculation
    drafted: int
    accepted: int
    emitted: int
    greedy: bool
    tokens: tuple[int, ...] = ()  # the tokens emitted this step
    # sampled chains: per draft position, the chance its token was accepted and the chance any
    # token drawn there would have been (Verdict); empty otherwise
    token_chances: tuple[float, ...] = ()
    chances: tuple[float, ...] = ()


@attrs.frozen
class StepFeedback:
    """One step as it was measured, for policies that learn (optional `Policy.feedback`)."""

    batch_size: int
    draft_tokens: int  # draft nodes scored, over the whole batch
    score_seconds: float
    other_seconds: float  # verification, bookkeeping and the policy itself
    propose_seconds: Mapping[str, float]  # per proposer asked this step
    asked: Mapping[str, tuple[int, int]]  # per proposer: (requests asked, largest budget)
    outcomes: Sequence[Outcome]


@runtime_checkable
class Policy(Protocol):
    """`plan` names the proposers to ask, in order, and the draft budget `k` of each (an empty
    mapping, or k = 0, means: do not speculate for this request this step). The engine asks
    them one round at a time; after each round `choose` sees the drafts so far and picks one,
    returns None (no speculation), or returns `DEFER` to ask the next planned proposer.

    Optional hooks, called when a policy has them: `begin_step(reqs, load, proposers)` before
    the step's plans (to decide for the whole batch at once), `feedback(StepFeedback)` after
    it, `forget(request_id)` when a request ends, and `report()` (a dict) for the metrics."""

    def plan(self, req: RequestView, load: Load) -> Mapping[str, int]: ...

    def choose(self, req: RequestView, drafts: Mapping[str, Draft | None]) -> Draft | None | Literal[_Defer.DEFER]: ...


@attrs.frozen
class FixedPolicy:
    """Always ask one proposer for `k` tokens; `proposer=None` or `k=0` is target-only decoding."""

    proposer: str | None = None
    k: int = 4

    def __attrs_post_init__(self) -> None:
        if self.k < 0:
            raise ConfigError(f"k must be >= 0, got {self.k}")

    def plan(self, req: RequestView, load: Load) -> Mapping[str, int]:
        if self.proposer is None or self.k == 0:
            return {}
        return {self.proposer: self.k}

    def choose(self, req: RequestView, drafts: Mapping[str, Draft | None]) -> Draft | None:
        if self.proposer is None:
            return None
        return drafts.get(self.proposer)


MEASURED_AFTER = 8  # drafts of a stage before a measured bar replaces the default
MEASURED_DECAY = 0.98


@attrs.frozen
class CascadePolicy:
    """Ask cheap proposers first; take a draft as soon as its score clears the bar, else ask
    the next one; the last stage's draft is taken as it is (the best-scoring earlier draft only
    when the last stage has none).

    `Draft.score` is each proposer's estimate of how many tokens will be accepted, so one bar
    serves all stages. The default bar is Arctic Inference's rule: the cheap draft wins when
    its score is at least the next proposer's draft length (a model speculator's number of
    heads) — it is then expected to do as well as the model would at its best.

    `threshold="measured"`: the bar is what the next stage's drafts really got accepted, a
    decayed mean over its verified drafts (the default bar until `MEASURED_AFTER` of them):
    a cheap draft expected to do as well as the model does *here* is taken, and the model's
    call saved -- where the model drafts poorly, the bar falls with it.

    `threshold="rate"`: the cheap draft is taken when the step it makes is expected to emit
    tokens at least as fast as the steps that used the next stage's drafts, its call included
    -- what each stage's steps really cost and emit, and how the cheap stage's scores compare
    with what it gets accepted, all measured (spec_sdk.cascade_rate; the default bar until
    both sides were seen `RATE_AFTER` times, greedy and sampled requests apart).
    """

    stages: Sequence[str]
    k: int | Sequence[int] = 4
    threshold: float | Literal["measured", "rate"] | None = None
    # per later stage: [decayed accepted tokens, decayed drafts, drafts]; learning state, not identity
    _measured: dict[str, list[float]] = attrs.field(factory=dict, init=False, eq=False, repr=False)
    _rates: StageRates = attrs.field(init=False, eq=False, repr=False)
    _asked: dict[str, Asked] = attrs.field(factory=dict, init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        if not self.stages:
            raise ConfigError("a cascade needs at least one proposer")
        if not isinstance(self.k, int) and len(self.k) != len(self.stages):
            raise ConfigError("give one k per stage, or a single k")
        if isinstance(self.threshold, str) and self.threshold not in ("measured", "rate"):
            raise ConfigError(f"threshold must be a number, 'measured', 'rate' or None, got {self.threshold!r}")
        object.__setattr__(self, "_rates", StageRates(tuple(self.stages)))

    def _budgets(self) -> list[int]:
        return [self.k] * len(self.stages) if isinstance(self.k, int) else list(self.k)

    def plan(self, req: RequestView, load: Load) -> Mapping[str, int]:
        return {name: k for name, k in zip(self.stages, self._budgets()) if k > 0}

    def choose(self, req: RequestView, drafts: Mapping[str, Draft | None]) -> Draft | None | Literal[_Defer.DEFER]:
        budgets = dict(zip(self.stages, self._budgets()))
        asked = [name for name in self.stages if name in drafts]
        latest = asked[-1]
        later = [name for name in self.stages[self.stages.index(latest) + 1 :] if budgets[name] > 0]
        draft = drafts[latest]
        greedy = req is None or req.params.greedy
        if later:
            bar = self._bar(later[0], budgets[later[0]], latest, greedy)
            if draft is not None and draft.score >= bar:
                return self._took(req, drafts, draft, greedy)
            return DEFER
        if draft is None:
            candidates = [d for d in drafts.values() if d is not None]
            draft = max(candidates, key=lambda d: d.score, default=None)
        # else: scores of different proposers are not on one scale: comparing them across
        # stages measured worse than trusting the stage the bar sent us to (docs/benchmarks.md)
        return self._took(req, drafts, draft, greedy)

    def _took(self, req: RequestView | None, drafts: Mapping[str, Draft | None], draft: Draft | None,
              greedy: bool) -> Draft | None:
        """The step's decision; with the rate bar, what was asked is kept for `feedback`."""
        if self.threshold == "rate" and req is not None:
            chosen = next((n for n, d in drafts.items() if d is draft and d is not None), None)
            self._asked[req.id] = Asked(greedy, {
                n: None if d is None else (first_chain(d).tokens, d.score, d.probs is not None)
                for n, d in drafts.items()}, chosen)
        return draft

    def _bar(self, stage: str, budget: int, cheap: str, greedy: bool) -> float:
        if isinstance(self.threshold, (int, float)):
            return float(self.threshold)
        if self.threshold == "rate":
            bar = self._rates.bar(cheap, stage, greedy)
            return float(budget) if bar is None else bar
        seen = self._measured.get(stage)
        if self.threshold == "measured" and seen is not None and seen[2] >= MEASURED_AFTER:
            return seen[0] / seen[1]
        return float(budget)

    def report(self) -> dict[str, object]:
        """What the bar is made of (the engine's metrics show it): with `"rate"`, per stage its
        steps' tokens per second, a step's seconds when stopping there, accepted per score."""
        if self.threshold == "rate":
            return {"threshold": "rate", "stages": self._rates.report()}
        if self.threshold == "measured":
            return {"threshold": "measured", "bars": {n: s[0] / s[1] for n, s in self._measured.items() if s[1]}}
        return {"threshold": self.threshold}

    def feedback(self, fb: StepFeedback) -> None:
        """With `threshold="measured"`: the accepted tokens of each later stage's drafts; with
        `"rate"`: what each stage's steps cost and emitted, and the cheap stages' acceptance."""
        if self.threshold == "rate":
            self._rates.observe(fb, self._asked)
            self._asked.clear()
            return
        if self.threshold != "measured":
            return
        for o in fb.outcomes:
            if o.proposer is not None and o.proposer in self.stages[1:] and o.drafted:
                seen = self._measured.setdefault(o.proposer, [0.0, 0.0, 0.0])
                seen[0] = MEASURED_DECAY * seen[0] + o.accepted
                seen[1] = MEASURED_DECAY * seen[1] + 1.0
                seen[2] += 1.0
