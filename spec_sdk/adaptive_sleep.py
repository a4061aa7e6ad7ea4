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
finding that out again: it looks for `FIRST_LOOK` steps (a prompt that repeats pays from the
start) and then sleeps as long as the requests of its kind last slept. Starting every request
over at `FIRST_GAP`, a request of 96 tokens where nothing helped was awake a third of its steps
(8 + 8 + 8 of them, plus the first request's learning), and those steps were most of what the
policy cost there. Nobody sleeps while a proposer is still to be learned: learning needs
requests to try it on.

Nor does a request go to sleep on a look that put nothing to the test: since it woke, no draft
of it was verified and the proposers the policy prices were never all asked for it (the cheap
ones are asked in the shadow; a dear one only when its draft is to be verified). Such a look
is the plan's estimate that nothing pays, not a finding, and asleep a request is not explored
either, so a wrong estimate was not corrected: each new request of the kind looked, drafted
nothing, went back to sleep and handed the sleep on. In one benchmark run sampled code slept
through 54% of its request-steps where the draft model paid 1.17x (rare: not seen in other
runs); in a simulation where a dear proposer paid nothing for 400 steps and then paid well,
the next six requests slept through ~80% of their steps. Awake, a request's explorations
(retry, random) verify a draft sooner or later.
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
# steps a new request looks before its first sleep, where its kind lately slept
FIRST_LOOK = 4


@attrs.define
class Sleep:
    """One request's gain from speculation and its sleep schedule."""

    gain: float
    awake: int = 0  # steps awake since it last woke (or started)
    gap: int = FIRST_GAP  # the next sleep's length
    until: int = 0  # it sleeps through the steps before this one
    tried: bool = False  # since it woke (or started): a draft verified, or every priced proposer asked

    def asleep(self, step: int) -> bool:
        return step < self.until

    def record(self, step: int, accepted: int, may_sleep: bool, tried: bool) -> None:
        """An awake step of this request ended with `accepted` draft tokens accepted; `tried`: a
        draft of it was verified, or every proposer the policy prices was asked for it."""
        self.gain += (accepted - self.gain) / _SPAN
        self.awake += 1
        self.tried = self.tried or tried
        if self.gain >= DORMANT_GAIN:
            self.gap = FIRST_GAP
        elif may_sleep and self.tried and self.awake >= AWAKE_STEPS:
            self.until, self.awake, self.tried = step + 1 + self.gap, 0, False
            self.gap = min(2 * self.gap, MAX_GAP)


@attrs.define
class Gains:
    """Accepted tokens a request-step, decayed, over all awake requests of each kind, and the
    gain and next sleep of the last of them: where a new request's gain and sleep start."""

    by_kind: dict[bool, float] = attrs.field(factory=dict)
    last: dict[bool, tuple[float, int]] = attrs.field(factory=dict)

    def start(self, greedy: bool) -> Sleep:
        # before anything is known, a request is taken to gain: it must show that it does not
        gain = self.by_kind.get(greedy, 1.0)
        last_gain, gap = self.last.get(greedy, (gain, FIRST_GAP))
        if gap <= FIRST_GAP:
            return Sleep(gain=gain)
        # the last request of its kind had slept at least once and found nothing since: the kind's
        # decayed gain may still carry the prior's hope (it falls only in awake steps)
        return Sleep(gain=min(gain, last_gain), gap=gap, awake=AWAKE_STEPS - FIRST_LOOK)

    def add(self, greedy: bool, accepted: int, sleep: Sleep | None = None) -> None:
        """An awake request's step: `accepted` draft tokens, and its sleep after it."""
        old = self.by_kind.get(greedy, 1.0)
        self.by_kind[greedy] = old + (accepted - old) / (4 * _SPAN)
        if sleep is not None:
            self.last[greedy] = (sleep.gain, sleep.gap)
