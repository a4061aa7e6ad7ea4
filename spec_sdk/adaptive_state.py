"""The adaptive policy's bookkeeping: what it knows of each request, and its exploration budget.

Exploring is paid from a budget of time: each step earns `explore` of the time its speculation
saved plus of a quarter of its own duration as credit (`explore` of its whole duration, times a
boost, while a proposer is still to be learned), capped at a few steps' worth so a long quiet
spell does not turn into a burst; an exploration runs only when its estimated cost fits. Where
nothing pays, exploring so costs about a quarter of `explore`: it never makes a user much slower.
Explorations that keep finding nothing that would have paid (a loaded machine, a workload no
proposer helps) slow the pace by a fifth each, down to 1/16; one that would have doubles it.
"""

from __future__ import annotations

import attrs

from spec_sdk.adaptive_sleep import Sleep
from spec_sdk.estimators import Acceptance

# exploration credit is capped at this many steps' worth
CREDIT_STEPS = 4.0
# the slowest exploration pace, as a share of `explore`
MIN_EXPLORE_SCALE = 1.0 / 16
# once learned, a step earns credit on this share of its time besides the time it saved
FLOOR_SHARE = 0.25
# probes come at most this many times `probe_every` apart (ProbeSchedule)
PROBE_STRETCH = 8
# a probe's forward within this share of the fit's prediction agreed with it
PROBE_AGREES = 0.1


def asked_within(asked: int, room: int) -> int:
    """What a proposer given a budget of `asked` tokens is really asked for, with `room` tokens
    left to the request: the engine clips a budget to the room less the target's own token
    (spec_sdk.step). A draft shorter than the plan's k near a request's end ran out of room, not
    of guesses."""
    return max(0, min(asked, room - 1))


@attrs.define
class RequestState:
    greedy: bool
    acceptance: dict[str, Acceptance] = attrs.field(factory=dict)
    retry_at: int = 0  # step of the next retry while not speculating; 0: none scheduled
    retry_gap: int = 0
    retries: int = 0  # round-robin over proposers
    exploring: str | None = None
    why: str = ""  # the exploration's reason: time, learn, retry, random
    timing: bool = False  # the exploration times or first learns a proposer: not judged on its draft
    expected: dict[str, list[float]] = attrs.field(factory=dict)  # raw expected tokens by k, per proposer
    calibrated: dict[str, list[float]] = attrs.field(factory=dict)  # ... scaled by the calibration
    calibrated_with: dict[str, tuple[float, ...]] = attrs.field(factory=dict)  # per k
    shadows: tuple[str, ...] = ()  # cheap proposers asked this step only to learn their acceptance
    # drafts in hand, the shadows' among them: (first chain, score, sampled)
    held: dict[str, tuple[tuple[int, ...], float, bool]] = attrs.field(factory=dict)
    asked: tuple[str, ...] = ()  # the proposers called for it this step (as choose saw them)
    budgets: dict[str, int] = attrs.field(factory=dict)  # what plan asked of each, this step
    probe: str | None = None  # a proposer explored in the shadow this step (greedy requests)
    room: int = 0  # tokens it may still produce
    warm: set[str] = attrs.field(factory=set)  # proposers that have drafted for it before
    explore_estimate: float = 0.0  # this step's verified exploration's expected tokens, if any
    length: int = 0  # its tokens as of this step
    # its length when each proposer was last asked: a proposer asked again after a pause must
    # first read the tokens it missed (a draft model runs them through its forward)
    seen: dict[str, int] = attrs.field(factory=dict)
    sleep: Sleep | None = None  # its gain from speculation and its sleep schedule (spec_sdk.adaptive_sleep)

    def behind(self, name: str) -> int:
        """Tokens `name` has not seen yet (0 for one never asked: that is a cold call)."""
        return self.length - self.seen.get(name, self.length)


@attrs.define
class ExploreBudget:
    """Seconds of exploration affordable now, and the pace they come in at."""

    explore: float
    credit: float = 0.0
    scale: float = 1.0  # of `explore`, by how explorations went
    started: bool = False

    def earn(self, step_seconds: float, boost: float = 1.0, saved: float | None = None) -> None:
        """A step of `step_seconds` ran; the first one endows a few steps' worth at once,
        enough to try each proposer soon.

        `saved`: the seconds this step's speculation saved against decoding its tokens without
        drafts. Given, and not learning (`boost` 1), a step earns `explore` of what it saved
        plus of `FLOOR_SHARE` of its time: exploring is paid mostly out of what speculation
        wins, so where nothing pays it costs a fraction of `explore` (the floor keeps it alive,
        slowly, for when something starts to pay); where speculation doubles the speed, about
        `explore` of the time, as before. While learning, `boost` times `explore` of the time."""
        if not self.started:
            self.credit, self.started = CREDIT_STEPS * step_seconds, True
        base = step_seconds if saved is None or boost > 1.0 else min(saved + FLOOR_SHARE * step_seconds, step_seconds)
        self.credit = min(self.credit + boost * self.explore * self.scale * base, CREDIT_STEPS * step_seconds)

    def afford(self, cost: float) -> bool:
        """Spend `cost` seconds if there is that much credit."""
        if cost > self.credit:
            return False
        self.credit -= cost
        return True

    def judge(self, fruitful: bool) -> None:
        """An exploration would (not) have paid had it been chosen."""
        self.scale = min(1.0, self.scale * 2.0) if fruitful else max(MIN_EXPLORE_SCALE, self.scale * 0.8)


CalKey = tuple[str, bool] | tuple[str, bool, int]


@attrs.define
class Calibration:
    """Realised over estimated extra tokens of verified drafts (decayed sums), per proposer and
    kind of request (greedy, sampled), and per draft length within that.

    Estimates picked as the best of several are biased upwards (the winner's curse); this
    scales them back -- per proposer (one whose estimates run high must not drag down the
    others'), per length (a proposer whose deep positions run high must not drag down its
    short drafts' estimates, which were right).

    Chosen drafts alone would ratchet it down: chosen when their estimate ran high, they always
    disappoint, the scale falls, only still luckier estimates get chosen, and so on until a
    proposer that pays is never chosen (under sampling, where a draft model pays ~10% on a CPU,
    it was). Verified explorations were not chosen on their estimate: they count too and
    anchor it."""

    real: dict[CalKey, float] = attrs.field(factory=dict)
    est: dict[CalKey, float] = attrs.field(factory=dict)

    def of(self, name: str, greedy: bool = True, k: int | None = None) -> float:
        """The scale for `name`'s estimates (of length `k`, if given). A few steps' worth of
        evidence comes first, so early noise cannot swing it: that estimates are right for the
        proposer, and for a length, that they are as right as the proposer's of any length."""
        key: CalKey = (name, greedy)
        cal = min(max((self.real.get(key, 0.0) + 4.0) / (self.est.get(key, 0.0) + 4.0), 0.25), 1.5)
        if k is None:
            return cal
        key = (name, greedy, k)
        real, est = self.real.get(key, 0.0), self.est.get(key, 0.0)
        return min(max((real + 4.0 * cal) / (est + 4.0), 0.25), 1.5)

    def add(self, name: str, greedy: bool, k: int, estimate: float, emitted: int) -> None:
        """One verified draft's estimate (as calibrated when it was made) against what it emitted."""
        raw = (estimate - 1) / self.of(name, greedy, k)  # scaled back
        for key in ((name, greedy), (name, greedy, k)):
            self.real[key] = 0.995 * self.real.get(key, 0.0) + (emitted - 1)
            self.est[key] = 0.995 * self.est.get(key, 0.0) + raw

    def report(self) -> dict[str, float]:
        return {f"{key[0]}{'' if key[1] else ' (sampled)'}{f' k={key[2]}' if len(key) > 2 else ''}":
                round(self.of(*key), 3) for key in sorted(self.est, key=str)}


@attrs.define
class ProbeSchedule:
    """When the whole batch next decodes without drafts (a probe; see AdaptivePolicy).

    A probe that finds the forward costing what the fit predicted stretches the gap to the
    next one, doubling up to PROBE_STRETCH times `every`; one that does not brings it back to
    `every`. At one request a probe gives up a step's accepted tokens (1.5 of 2.5 under
    sampling): one every 64 steps was about 1% of a run whose forward's cost did not move."""

    every: int
    gap: int = 0
    next_at: int = 0

    def __attrs_post_init__(self) -> None:
        self.gap = self.next_at = self.every

    def due(self, step: int) -> bool:
        return self.every > 0 and step >= self.next_at

    def judge(self, step: int, predicted: float, measured: float) -> None:
        """The probe of `step` took `measured` seconds where the fit said `predicted`."""
        agrees = abs(measured - predicted) <= PROBE_AGREES * predicted
        self.gap = min(self.gap * 2, PROBE_STRETCH * self.every) if agrees else self.every
        self.next_at = step + self.gap
