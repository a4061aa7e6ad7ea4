"""The adaptive policy's bookkeeping: what it knows of each request, and its exploration budget.

Exploring is paid from a budget of time: each step earns `explore` of its own duration as
credit (faster while a proposer is still to be learned), capped at a few steps' worth so a long
quiet spell does not turn into a burst; an exploration runs only when its estimated cost fits.
Explorations that keep finding nothing that would have paid (a loaded machine, a workload no
proposer helps) slow the pace by a fifth each, down to 1/16; one that would have doubles it.
"""

from __future__ import annotations

import attrs

from spec_sdk.estimators import Acceptance

# exploration credit is capped at this many steps' worth
CREDIT_STEPS = 4.0
# the slowest exploration pace, as a share of `explore`
MIN_EXPLORE_SCALE = 1.0 / 16


@attrs.define
class RequestState:
    greedy: bool
    acceptance: dict[str, Acceptance] = attrs.field(factory=dict)
    retry_at: int = 0  # step of the next retry while not speculating; 0: none scheduled
    retry_gap: int = 0
    retries: int = 0  # round-robin over proposers
    exploring: str | None = None
    timing: bool = False  # the exploration times or first learns a proposer: not judged on its draft
    expected: dict[str, list[float]] = attrs.field(factory=dict)  # raw expected tokens by k, per proposer
    calibrated: dict[str, list[float]] = attrs.field(factory=dict)  # ... scaled by the calibration
    calibrated_with: dict[str, float] = attrs.field(factory=dict)
    shadows: tuple[str, ...] = ()  # cheap proposers asked this step only to learn their acceptance
    shadow_drafts: dict[str, tuple[int, ...]] = attrs.field(factory=dict)
    asked: tuple[str, ...] = ()  # the proposers asked for it this step
    probe: str | None = None  # a proposer explored in the shadow this step (greedy requests)
    room: int = 0  # tokens it may still produce
    warm: set[str] = attrs.field(factory=set)  # proposers that have drafted for it before


@attrs.define
class ExploreBudget:
    """Seconds of exploration affordable now, and the pace they come in at."""

    explore: float
    credit: float = 0.0
    scale: float = 1.0  # of `explore`, by how explorations went
    started: bool = False

    def earn(self, step_seconds: float, boost: float = 1.0) -> None:
        """A step of `step_seconds` ran; the first one endows a few steps' worth at once,
        enough to try each proposer soon."""
        if not self.started:
            self.credit, self.started = CREDIT_STEPS * step_seconds, True
        self.credit = min(self.credit + boost * self.explore * self.scale * step_seconds, CREDIT_STEPS * step_seconds)

    def afford(self, cost: float) -> bool:
        """Spend `cost` seconds if there is that much credit."""
        if cost > self.credit:
            return False
        self.credit -= cost
        return True

    def judge(self, fruitful: bool) -> None:
        """An exploration would (not) have paid had it been chosen."""
        self.scale = min(1.0, self.scale * 2.0) if fruitful else max(MIN_EXPLORE_SCALE, self.scale * 0.8)
