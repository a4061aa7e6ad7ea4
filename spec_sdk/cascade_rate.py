"""What each stage of a cascade delivers per second, measured: the bar of
`CascadePolicy(threshold="rate")`.

A cheap stage's draft should win when the step it makes emits tokens at least as fast as the
step the next stage would make: `(1 + cal * score) / t_stop >= rate_next`, where
- `cal` is the cheap stage's realised accepted tokens over its score (its scores are counts of
  a suffix tree or an n-gram table, not calibrated; under sampling they run high);
- `t_stop` the seconds a request's step costs when the cascade stops at the cheap stage (its
  share of the forward and of the step's other work, plus the stages asked so far);
- `rate_next` the tokens per second of the steps that used the next stage's draft, that
  stage's call included.
So the bar is `score >= (rate_next * t_stop - 1) / cal`: where the model stage is dear and
accepts little, a modest cheap draft wins; where it is cheap or accepts much, only a strong one.
Arctic's bar (the next stage's k) and the "measured" bar (its accepted tokens) ignore what the
model's call costs and how far the cheap stage's scores are from its real acceptance.

`cal` learns from every cheap draft, verified or not: a draft that was not sampled (one-hot `q`)
is accepted exactly where it matches the tokens the step emitted -- under sampling too, since
the emitted tokens follow the target's distribution whichever draft was verified -- so its
matched prefix is its acceptance, cut off where the step's tokens end (counted as it stands: a
little low). Greedy and sampled requests are kept apart: the same score means less under sampling.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import attrs

from spec_sdk.estimators import matched_prefix

if TYPE_CHECKING:
    from spec_sdk.policy import StepFeedback

RATE_DECAY = 0.98
# observations of each side before the measured bar replaces the default one
RATE_AFTER = 8


@attrs.define
class _Seen:
    """Decayed sums for one (stage, greedy) pair."""

    emitted: float = 0.0  # tokens of the steps that used this stage's draft
    seconds: float = 0.0  # ... and their per-request seconds
    used: int = 0
    stop_seconds: float = 0.0  # per-request seconds of a step that stops at this stage
    stops: float = 0.0
    accepted: float = 0.0  # this stage's drafts: accepted (or matched) tokens
    scored: float = 0.0  # ... and their scores
    judged: int = 0


@attrs.frozen
class Asked:
    """One request's stages asked this step: per stage the draft's first chain, its score and
    whether it was sampled; and which stage's draft the cascade took."""

    greedy: bool
    drafts: Mapping[str, tuple[tuple[int, ...], float, bool] | None]
    chosen: str | None


# how fast the bar rises (falls back) per step that took the cheap stage's draft
RAISE_STEP = 1.05
RAISE_MAX = 8.0


@attrs.define
class StageRates:
    stages: Sequence[str]
    _seen: dict[tuple[str, bool], _Seen] = attrs.field(factory=dict)
    # per (cheap stage, greedy): a factor >= 1 on the bar, raised while the steps that took that
    # stage's drafts emit more slowly than the next stage's steps (see `observe`)
    _raised: dict[tuple[str, bool], float] = attrs.field(factory=dict)

    def bar(self, stage: str, nxt: str, greedy: bool) -> float | None:
        """The score `stage`'s draft needs to beat deferring to `nxt`; None until measured."""
        cheap, model = self._seen.get((stage, greedy)), self._seen.get((nxt, greedy))
        if cheap is None or model is None or cheap.judged < RATE_AFTER or model.used < RATE_AFTER:
            return None
        if cheap.scored <= 0 or cheap.accepted <= 0 or cheap.stops <= 0 or model.seconds <= 0:
            return float("inf")
        rate_next = model.emitted / model.seconds
        t_stop = cheap.stop_seconds / cheap.stops
        # raised: the cheap step must beat the next stage's rate by that factor (see _adjust)
        rate_next *= self._raised.get((stage, greedy), 1.0)
        return (rate_next * t_stop - 1.0) / (cheap.accepted / cheap.scored)

    def report(self) -> dict[str, dict[str, float | int]]:
        """Per stage (and "(sampled)"): tokens per second of its steps, seconds of a step that
        stops there, and its realised accepted tokens per point of score."""
        out: dict[str, dict[str, float | int]] = {}
        for (name, greedy), s in self._seen.items():
            out[name + ("" if greedy else " (sampled)")] = {
                "used": s.used,
                "tokens_per_second": s.emitted / s.seconds if s.seconds else 0.0,
                "stop_seconds": s.stop_seconds / s.stops if s.stops else 0.0,
                "accepted_per_score": s.accepted / s.scored if s.scored else 0.0,
                "bar_raised": self._raised.get((name, greedy), 1.0),
            }
        return out

    def observe(self, fb: StepFeedback, asked: Mapping[str, Asked]) -> None:
        base = (fb.score_seconds + fb.other_seconds) / max(fb.batch_size, 1)
        took: set[tuple[str, bool]] = set()
        share = {n: s / max(fb.asked.get(n, (1, 0))[0], 1) for n, s in fb.propose_seconds.items()}
        d = RATE_DECAY
        for o in fb.outcomes:
            a = asked.get(o.request_id)
            if a is None:
                continue
            spent = base
            for name in self.stages:
                if name not in a.drafts:
                    break  # asked in order: the later stages were not
                spent += share.get(name, 0.0)
                seen = self._seen.setdefault((name, a.greedy), _Seen())
                seen.stop_seconds, seen.stops = d * seen.stop_seconds + spent, d * seen.stops + 1.0
                if name == a.chosen:
                    seen.emitted, seen.seconds = d * seen.emitted + o.emitted, d * seen.seconds + spent
                    seen.used += 1
                    took.add((name, a.greedy))
                draft = a.drafts[name]
                if draft is None:
                    continue
                tokens, score, sampled = draft
                if name == a.chosen:
                    got = o.accepted
                elif sampled:
                    continue  # a sampled draft's acceptance is not a match: only verifying tells
                else:
                    got = matched_prefix(tokens, o.tokens)
                seen.accepted, seen.scored = d * seen.accepted + got, d * seen.scored + score
                seen.judged += 1
        for name, greedy in took:
            self._adjust(name, greedy)

    def _adjust(self, stage: str, greedy: bool) -> None:
        """The bar's linear model (accepted = cal * score) runs high at high scores under
        sampling: a suffix draft scoring 6 is not accepted six times as much as one scoring 1.
        So the bar is checked against what it lets through: while the steps that took `stage`'s
        drafts emit more slowly than the next stage's steps, it rises; when they emit faster, it
        falls back towards the computed bar (never below it: where the cheap stage's steps beat
        the next stage's on average, its marginal ones need not)."""
        i = list(self.stages).index(stage)
        if i + 1 >= len(self.stages):
            return
        cheap, model = self._seen.get((stage, greedy)), self._seen.get((self.stages[i + 1], greedy))
        if cheap is None or model is None or cheap.used < RATE_AFTER or model.used < RATE_AFTER:
            return
        if cheap.seconds <= 0 or model.seconds <= 0:
            return
        factor = self._raised.get((stage, greedy), 1.0)
        slower = cheap.emitted / cheap.seconds < model.emitted / model.seconds
        factor = min(factor * RAISE_STEP, RAISE_MAX) if slower else max(factor / RAISE_STEP, 1.0)
        self._raised[(stage, greedy)] = factor

