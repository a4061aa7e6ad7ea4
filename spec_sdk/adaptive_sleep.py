"""When a request's speculation stopped paying, the adaptive policy leaves it alone for a while.

Deciding costs even where nothing is drafted: each step the policy plans the request's
option, asks the cheap proposers in the shadow and scores their drafts in hindsight. On a
CPU at one request that was 0.3-0.4 ms of a 9 ms step -- where no proposer helps (sampled chat
with suffix and n-gram: ~0.02 accepted tokens a step), 4% slower than decoding without the
policy at all, for nothing. So a request whose speculation lately gained it almost nothing
(its accepted tokens a step, decayed over about 16 steps, below `DORMANT_GAIN`) sleeps: for
`gap` steps the policy plans nothing for it, asks nothing, explores nothing; then it is awake
for at least `AWAKE_STEPS` steps -- shadows, hand and plan as usual -- and sleeps again only if
those found nothing, twice as long each time, up to `MAX_GAP`. One accepted token wakes the
count back up and resets the gap.

A new request starts at the gain its kind of request (greedy or sampled) has had lately over
all requests, so that where speculation pays, a request is not put to sleep before it had a
chance to show it, and where it never does, a request does not spend its first fifty steps
finding that out again. Nobody sleeps while a proposer is still to be learned: learning needs
requests to try it on.
"""

from __future__ import annotations

import attrs

# accepted tokens a step (decayed) below which speculation is not worth the policy's time
DORMANT_GAIN = 0.05
# the decay of a request's gain: about this many steps
_SPAN = 16.0
FIRST_GAP = 16
MAX_GAP = 64
AWAKE_STEPS = 8


@attrs.define
class Sleep:
    """One request's gain from speculation and its sleep schedule."""

    gain: float
    awake: int = 0  # steps awake since it last woke (or started)
    gap: int = FIRST_GAP  # the next sleep's length
    until: int = 0  # it sleeps through the steps before this one

    def asleep(self, step: int) -> bool:
        return step < self.until

    def record(self, step: int, accepted: int, may_sleep: bool) -> None:
        """An awake step of this request ended with `accepted` draft tokens accepted."""
        self.gain += (accepted - self.gain) / _SPAN
        self.awake += 1
        if self.gain >= DORMANT_GAIN:
            self.gap = FIRST_GAP
        elif may_sleep and self.awake >= AWAKE_STEPS:
            self.until, self.awake = step + 1 + self.gap, 0
            self.gap = min(2 * self.gap, MAX_GAP)


@attrs.define
class Gains:
    """Accepted tokens a request-step, decayed, over all awake requests of each kind: where a
    new request's gain starts."""

    by_kind: dict[bool, float] = attrs.field(factory=dict)

    def start(self, greedy: bool) -> Sleep:
        # before anything is known, a request is taken to gain: it must show that it does not
        return Sleep(gain=self.by_kind.get(greedy, 1.0))

    def add(self, greedy: bool, accepted: int) -> None:
        old = self.by_kind.get(greedy, 1.0)
        self.by_kind[greedy] = old + (accepted - old) / (4 * _SPAN)
