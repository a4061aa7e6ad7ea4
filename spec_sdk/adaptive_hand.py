"""The adaptive policy's last word on the drafts in hand: judged by the scores they came with.

The batch plan picks each request's (proposer, k) before any proposer runs, from acceptance
averaged over the request's past steps. But the cheap proposers (suffix, n-gram) are asked
every step anyway (in the shadow, besides the chosen one), and every draft comes with a score
that says much about *this* step: a long suffix match drafts well, a one-token match poorly.
So once a request's drafts are in, the policy takes the one -- cut to the length -- whose
expected accepted tokens most outweigh what its tokens add to the forward, at the batch's quiet
rate, or none when no draft is worth its tokens. The calls are paid by then; only the forward
is still to choose. An exploration keeps the plan's choice: it is verified to learn.

Expected accepted tokens come from acceptance by draft position learned per score bin (a
proposer's score is a count's estimate, not a calibrated one -- under sampling it runs several
times too high -- and how far off it is differs between weak and strong matches), shrunk towards
the proposer's pooled acceptance. They learn from every draft in hand, taken or not: a
draft that was not sampled is accepted exactly where it matches the tokens the step emitted
(under sampling too, as the emitted tokens follow the target's distribution whichever draft was
verified); past the emitted tokens nothing is known, and nothing is counted. A taken draft's
verified outcome counts as it is. Greedy and sampled requests are learned apart.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import attrs

from spec_sdk.estimators import Acceptance, expected_tokens, matched_prefix
from spec_sdk.types import Draft, first_chain

InHand = dict[str, tuple[tuple[int, ...], float, bool]]  # proposer -> (first chain, score, sampled)

# Score bins: a proposer's score is its own estimate of the accepted tokens.
_SCORE_EDGES = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)


def _bin(score: float) -> int:
    for i, edge in enumerate(_SCORE_EDGES):
        if score < edge:
            return i
    return len(_SCORE_EDGES)


def draft_seconds(k: int, per_token: float, once: float, curve: Sequence[float] | None) -> float:
    """What a draft of k tokens adds to the forward: the measured curve where it reaches
    (ScoreFit.draft_curve, `once` included), else `per_token` a token plus `once`."""
    return curve[k] if curve is not None and k < len(curve) else per_token * k + once


@attrs.define
class HandJudge:
    bins: dict[tuple[str, bool, int], Acceptance] = attrs.field(factory=dict)
    kept: int = 0  # steps that kept the plan's choice
    taken: int = 0  # ... that took another draft than the plan's, or cut it, or took one where it had none
    dropped: int = 0  # ... where no draft in hand was worth its tokens
    saved: int = 0  # ... where a draft in hand beat the plan's dear proposer, whose call was saved

    @staticmethod
    def hold(drafts: Mapping[str, Draft | None], into: InHand) -> None:
        """Remember the drafts in hand (what `learn` scores them against, after the step)."""
        for n, d in drafts.items():
            if d is not None and n not in into:
                into[n] = (first_chain(d).tokens, d.score, d.probs is not None)

    def expected(self, name: str, greedy: bool, score: float, length: int, prior: Sequence[float]) -> list[float]:
        """Expected accepted tokens of a draft with this score cut to 0..`length` tokens."""
        acc = self.bins.get((name, greedy, _bin(score)))
        rates = acc.rates(length, prior) if acc is not None else list(prior[:length])
        return [e - 1.0 for e in expected_tokens(rates)]

    def pick(self, drafts: Mapping[str, Draft | None], greedy: bool,
             prior: Callable[[str, int], Sequence[float] | None], per_token: float, once: float,
             rate: float, curve: Sequence[float] | None = None) -> tuple[str | None, int, float] | None:
        """The draft most worth taking, how many of its tokens, and its worth; (None, 0, 0.0)
        when none is worth its tokens; None when no draft in hand has a known proposer.
        Worth: expected accepted tokens minus what the draft's tokens (`per_token` seconds
        each, `once` more if it is the forward's first draft) would have emitted at `rate`.
        `prior(name, k)`: the proposer's pooled acceptance of positions 0..k-1, None while
        nothing is known of it. `curve`: where given, what k draft tokens add to the forward
        as measured (ScoreFit.draft_curve, `once` included), in place of the line."""
        best: tuple[str | None, int, float] = (None, 0, 0.0)
        known = False
        for n, d in drafts.items():
            if d is None:
                continue
            pooled = prior(n, len(d))
            if pooled is None:
                continue
            known = True
            gains = self.expected(n, greedy, d.score, len(d), pooled)
            for k in range(1, len(gains)):
                worth = gains[k] - rate * draft_seconds(k, per_token, once, curve)
                if worth > best[2]:
                    best = (n, k, worth)
        return best if known else None

    def count(self, pick: str | None, k: int, planned: str | None, planned_k: int) -> None:
        if pick == planned and (pick is None or k == planned_k):
            self.kept += 1
        elif pick is None:
            self.dropped += 1
        else:
            self.taken += 1

    def learn(self, held: InHand, greedy: bool, verified: str | None, drafted: int, accepted: int,
              emitted: Sequence[int]) -> None:
        """After the step: each draft in hand against what the step emitted (`verified`: whose
        draft was verified, `drafted` of its tokens -- it may have been cut -- `accepted` of them)."""
        for n, (tokens, score, sampled) in held.items():
            if not sampled:  # a match is acceptance, for the verified draft too (and one more: the bonus)
                seen, got = min(len(tokens), len(emitted)), matched_prefix(tokens, emitted)
            elif n == verified:
                seen, got = drafted, accepted
            else:
                continue  # a sampled draft's acceptance is no match: only verifying tells
            if seen:
                self.bins.setdefault((n, greedy, _bin(score)), Acceptance(decay=0.995)).add(seen, got)

    def report(self) -> dict[str, int]:
        return {"kept": self.kept, "taken": self.taken, "dropped": self.dropped, "calls_saved": self.saved}
