"""What the adaptive policy expects of each proposer: acceptance by draft position, per request
and pooled over requests of a kind (greedy, sampled), and what a draft of each length is
expected to emit, calibrated against what verified drafts really emitted.

Acceptance is learned from verified drafts (under sampling from verification's chances, not
its one draw), from cheap drafts scored in hindsight against the tokens a step emitted, and
from calls that returned no draft (they ran out at the first position)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import attrs

from spec_sdk.adaptive_state import Calibration, RequestState
from spec_sdk.estimators import Acceptance, expected_tokens, matched_prefix
from spec_sdk.policy import Outcome

# Before anything is measured: half of each draft position accepted (the forward's prior:
# spec_sdk.adaptive_cost).
PRIOR_ACCEPT = (0.5,)
# a request's own acceptance is shrunk towards the pooled one as if this many drafts had gone
# the pooled way; more under sampling, where acceptance is more the proposer's and the
# temperature's than the request's, and a few unlucky drafts must not turn a proposer off
_OWN_STRENGTH = 2.0
_OWN_STRENGTH_SAMPLED = 16.0
# requests whose estimates are recomputed per step, in turns (all of them in a smaller batch)
_REFRESH = 16
# A sampled request's options are weighed with hope: the pooled first-position acceptance
# raised by this many standard errors of it. Only a verified draft teaches acceptance under
# sampling, and a proposer that starts unlucky would otherwise never be verified again (a
# draft model that pays 30% here went unused for 400 steps after four bad drafts); the hope
# shrinks as the drafts it makes verify it, and what it costs is the few drafts that do.
_HOPE = 1.0
# the pooled acceptance forgets slower than a request's own (Acceptance's default)
_POOLED_DECAY = 0.995

Pooled = dict[tuple[str, bool], Acceptance]


@attrs.define(eq=False)
class Estimates:
    """`kmax(name)`: the longest draft the policy may ask of `name` now."""

    kmax: Callable[[str], int]
    pooled: Pooled = attrs.field(factory=dict)
    # realised over estimated tokens: the winner's curse scaled back (spec_sdk.adaptive_state)
    calibration: Calibration = attrs.field(factory=Calibration)

    def gains(self, states: Sequence[RequestState], names: Sequence[str], step: int) -> dict[str, list[list[float]]]:
        """Expected tokens emitted for k = 0..max_k, per proposer and request, calibrated.

        A request's raw estimate is recomputed when it is new and otherwise in turns, about
        `_REFRESH` requests a step: a big batch's requests change little from one step to the
        next, and recomputing all of them every step cost more than the decision itself."""
        priors: dict[tuple[str, bool], list[float]] = {}

        def prior_of(n: str, greedy: bool) -> list[float]:
            if (n, greedy) not in priors:
                pooled = self.pooled.get((n, greedy))
                k = self.kmax(n)
                priors[(n, greedy)] = pooled.rates(k, PRIOR_ACCEPT) if pooled is not None else list(PRIOR_ACCEPT) * k
            return priors[(n, greedy)]

        # at least every other step: one step's outcome moves the decayed estimates little
        every = max(2, -(-len(states) // _REFRESH))
        cals = {(n, g): self.calibrations(n, g) for n in names for g in {s.greedy for s in states}}
        for i, s in enumerate(states):
            if len(s.expected) < len(names) or (step + i) % every == 0:
                for n in names:
                    prior = prior_of(n, s.greedy)
                    own = s.acceptance.get(n)
                    strength = _OWN_STRENGTH if s.greedy else _OWN_STRENGTH_SAMPLED
                    s.expected[n] = expected_tokens(own.rates(len(prior), prior, strength) if own is not None else prior)
                s.calibrated_with = {}
            for n in names:
                cal = cals[(n, s.greedy)]
                old = s.calibrated_with.get(n)
                # the calibration drifts slowly
                if old is None or max(abs(x - y) for x, y in zip(old, cal)) > 0.005:
                    s.calibrated[n] = [1.0 + c * (e - 1.0) for c, e in zip(cal, s.expected[n])]
                    s.calibrated_with[n] = cal
        return {n: [s.calibrated[n] for s in states] for n in names}

    def hoped(self, states: Sequence[RequestState], names: Sequence[str],
              gains: dict[str, list[list[float]]]) -> dict[str, list[list[float]]]:
        """`gains` with the sampled requests' raised by the hope in their proposers (_HOPE):
        what the decisions weigh; the estimates recorded (for the calibration and the report)
        stay the plain ones."""
        if all(s.greedy for s in states):
            return gains
        hopes: dict[str, list[float]] = {}
        for n in names:
            # The first position's doubt, as tokens, for every k alike: whether the proposer
            # pays at all is what is open; raising deep positions, rarely reached and so the
            # most in doubt, would send the hope into long drafts, which cost the most.
            hopes[n] = [0.0] + [_HOPE * self.doubt(n, False)] * self.kmax(n)
        return {n: [g if s.greedy else [x + h for x, h in zip(g, hopes[n])] for s, g in zip(states, gains[n])]
                for n in names}

    def doubt(self, name: str, greedy: bool) -> float:
        """The standard error of `name`'s pooled first-position acceptance for this kind of
        request (greedy, sampled): how open whether it pays at all still is."""
        pooled = self.pooled.get((name, greedy))
        rate = pooled.rates(1, PRIOR_ACCEPT) if pooled is not None else list(PRIOR_ACCEPT)
        return (pooled or Acceptance()).doubt(rate)[0]

    def calibrations(self, name: str, greedy: bool) -> tuple[float, ...]:
        """The calibration's scale for each draft length 0..kmax of `name`."""
        if not greedy:
            # one scale for all lengths: a sampled request's estimates are shrunk hard to the
            # pooled ones (little winner's curse to undo), and per length, from the few drafts
            # of each, the scales came out noisy and out of order (k=2 at 0.7, k=3 at 0.95: a
            # paying draft model's two-token drafts looked worse than a speculator's)
            return (self.calibration.of(name, greedy),) * (self.kmax(name) + 1)
        return tuple(self.calibration.of(name, greedy, k) for k in range(self.kmax(name) + 1))

    def pooled_rates(self, name: str, greedy: bool, k: int, least: float) -> list[float] | None:
        """`name`'s acceptance of positions 0..k-1 over all requests of this kind; None while
        it rests on fewer than `least` drafts."""
        pooled = self.pooled.get((name, greedy))
        if pooled is None or pooled.weight < least:
            return None
        return pooled.rates(k, PRIOR_ACCEPT)

    def _both(self, state: RequestState, name: str, greedy: bool) -> tuple[Acceptance, Acceptance]:
        return (state.acceptance.setdefault(name, Acceptance()),
                self.pooled.setdefault((name, greedy), Acceptance(decay=_POOLED_DECAY)))

    def verified(self, state: RequestState, o: Outcome, asked: int) -> None:
        """A verified draft of `o.proposer` (asked for `asked` tokens, 0 if not by the plan)."""
        assert o.proposer is not None
        for acc in self._both(state, o.proposer, o.greedy):
            if has_chances(o):  # a sampled chain: the chances, not the one draw of them
                acc.add_chances(o.token_chances, o.chances, asked)
            else:
                acc.add(o.drafted, o.accepted, asked)

    def hindsight(self, state: RequestState, name: str, draft: Sequence[int], o: Outcome, asked: int) -> int:
        """Score a shadow draft against the emitted tokens (positions past them are unknown);
        returns how many of its first tokens matched."""
        if not draft or not o.tokens:
            return 0
        seen = min(len(draft), len(o.tokens))
        matched = matched_prefix(draft, o.tokens)
        # a short draft that matched all the way ran out at a position the step did reach
        ran_out = asked if len(draft) < len(o.tokens) else 0
        for acc in self._both(state, name, o.greedy):
            acc.add(seen, matched, ran_out)
        return matched

    def no_draft(self, state: RequestState, name: str, greedy: bool) -> None:
        """`name` was asked and had no draft: it ran out at the first position, as a short draft
        runs out past its end (Acceptance.add). Counted from its drafts alone, a proposer that
        often has none (a suffix tree with no match) was planned as if it always drafted as
        well as it does when it has a match, over one that always drafts."""
        for acc in self._both(state, name, greedy):
            acc.add(0, 0, 1)

    def report(self) -> dict[str, object]:
        return {
            # pooled over requests, from verified and shadow drafts: P(position j accepted | reached)
            "acceptance": {f"{n}{'' if greedy else ' (sampled)'}": [round(r, 3) for r in a.rates(4, PRIOR_ACCEPT)]
                           for (n, greedy), a in self.pooled.items()},
            "calibration": self.calibration.report(),
        }


def has_chances(o: Outcome) -> bool:
    """Whether `o` is a sampled chain verified with its chances (Verdict.token_chances)."""
    return not o.greedy and o.drafted > 0 and len(o.chances) == len(o.token_chances) == o.drafted
