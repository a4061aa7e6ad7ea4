"""The adaptive policy's cost side: what a step's forward, each proposer's call and a proposer's
first call for a request cost, all measured online (spec_sdk.estimators), and the batch plan
priced by them.

- The forward: ScoreFit over (requests, draft tokens), and its measured curve of what draft
  tokens add (ScoreFit.draft_curve) for the plan's what-ifs.
- A proposer's warm call: CostModel over (1, requests asked, largest budget, tokens behind):
  a model proposer runs a forward a token, and one asked again after a pause first reads the
  tokens it missed.
- A proposer's first (cold) call for a request: what it cost beyond a warm one (its cache
  filling with the prompt), charged once, to the step that first asks it for that request.
- Everything else a step costs (verification, bookkeeping), as a decayed constant.

Nothing is assumed to be free: before a forward with drafts was measured, a draft token is
priced like a request (the forward as if compute-bound, the pessimistic end), and a proposer
never timed is guessed at a tenth of a step.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from spec_sdk.adaptive_plan import BatchPlan
from spec_sdk.adaptive_state import RequestState
from spec_sdk.estimators import CostModel, ScoreFit
from spec_sdk.policy import StepFeedback

# Before anything is measured: the forward's cost 5% fixed and 95% shared by its tokens
# (compute-bound: the case where speculating hurts most).
PRIOR_FIXED_SHARE = 0.05
# tokens a step is taken to emit, where a plan must guess how many steps a request has left
_STEP_TOKENS = 2
# a proposer whose call for one request costs at most this share of a step is cheap: asked in
# the shadow (spec_sdk.adaptive); a dearer one is what exploring is for
SHADOW_SHARE = 0.01


@attrs.define(eq=False)
class Costs:
    """`longest`: the longest draft a proposer may be asked for (how far the curve reaches)."""

    longest: int
    score: ScoreFit | None = None
    propose: dict[str, CostModel] = attrs.field(factory=dict)  # warm calls only
    # seconds a proposer's first call for a request costs beyond a warm one
    cold: dict[str, float] = attrs.field(factory=dict)
    other: float | None = None
    last_step: float = 0.0  # the last step's seconds
    _calls: dict[tuple[str, int], float] = attrs.field(factory=dict)  # call_cost until the next learn
    # ScoreFit.draft_curve for the batch size it was made for, until the next learn
    _curve: list[float] | None = None
    _curve_size: int = 0
    # each proposer's fitted coefficients, until the next learn: a step makes three plans
    _coefs: dict[str, tuple[float, ...]] | None = None

    def call_cost(self, name: str, kmax: int) -> float:
        """Estimated seconds of one warm call of `name` for one request at budget `kmax` (a
        call that follows the last one: nothing to catch up); an untimed proposer is guessed at
        a tenth of a step, or at what its first (cold) call cost if that was less: a warm call
        costs no more than a cold one. Kept until the next `learn`: a step asks it for every
        request, several times."""
        cost = self._calls.get((name, kmax))
        if cost is None:
            model = self.propose.get(name)
            if model is None:
                cost = min(0.1 * self.last_step, self.cold.get(name, float("inf")))
            else:
                a, b, c, _ = model.coef
                cost = a + b + c * kmax
            self._calls[(name, kmax)] = cost
        return cost

    def batch_call(self, name: str, kmax: int) -> tuple[float, float]:
        """One warm call of `name` at budget `kmax` for several requests, as (seconds per call,
        seconds per request asked): a call for many requests pays its fixed and per-token parts
        once. An untimed proposer: all of call_cost per request."""
        model = self.propose.get(name)
        if model is None:
            return 0.0, self.call_cost(name, kmax)
        a, b, c, _ = model.coef
        return max(a + c * kmax, 0.0), max(b, 0.0)

    def shadow_bar(self) -> float:
        """Seconds a call for one request may cost and still be cheap (SHADOW_SHARE of a step)."""
        return SHADOW_SHARE * self.last_step

    def dear(self, name: str, kmax: int) -> bool:
        """Whether a warm call of `name` for one request asked for `kmax` tokens is not cheap."""
        return self.call_cost(name, kmax) > self.shadow_bar()

    def cold_cost(self, state: RequestState, name: str, spread: bool = True) -> float:
        """The first call's extra cost, spread over the steps the request may still take (two
        tokens a step; for a greedy request at most 16 steps: past that the proposer may well be
        dropped again); for a warm proposer, what reading the tokens it missed since it was last
        asked costs. A step's worth of them (two tokens) is what a proposer asked every step
        reads every step, and is charged whole; the rest, after a pause, is paid once and the
        proposer is current again: spread like a first call, and never more than one. (Charged
        whole, a draft model that fell behind while another proposer drafted looked dearer with
        each step it was left out, and was not asked again.) `spread` False: charged whole (an
        exploration other than a sampled request's learning: the request keeps the fill only if
        the proposer is then chosen, which a probe or a shadow try seldom leads to)."""
        # (a sampled request keeps a proposer that pays: its acceptance is the proposer's and the
        # temperature's more than the text's -- spread over all the steps it may still take)
        steps = max(1.0, state.room / _STEP_TOKENS) if spread else 1.0
        over = min(16.0, steps) if state.greedy else steps
        if name in state.warm:
            model = self.propose.get(name)
            if model is None:
                return 0.0
            behind = state.behind(name)
            every_step = min(behind, _STEP_TOKENS)
            pause = model.coef[3] * (behind - every_step)
            return model.coef[3] * every_step + min(pause, self.cold.get(name, pause)) / over
        return self.cold.get(name, 0.0) / over

    def curve(self, size: int) -> list[float] | None:
        """What 0.. draft tokens add to a forward of `size` requests, as the plan of this step
        priced it (None if no plan was made for that size this step)."""
        return self._curve if self._curve is not None and self._curve_size == size else None

    def plan(self, size: int) -> BatchPlan:
        assert self.score is not None
        if self._curve is None or len(self._curve) < 2 or self._curve_size != size:
            # the longest draft for every request, at most: what a plan can reach
            self._curve, self._curve_size = self.score.draft_curve(size, size * self.longest), size
        if self._coefs is None:
            self._coefs = {n: m.coef for n, m in self.propose.items()}
        return BatchPlan(self.score.coef, self.other or 0.0, self._coefs, size, self._curve)

    def quiet_step(self, size: int) -> float:
        """Predicted seconds of a step of `size` requests without drafts."""
        assert self.score is not None
        return self.score.predict(size, 0) + (self.other or 0.0)

    def learn(self, fb: StepFeedback, requests: Mapping[str, RequestState]) -> None:
        """One step's measurements: the forward, the step's other work, each proposer's call."""
        self._calls, self._curve, self._coefs = {}, None, None
        self.last_step = fb.score_seconds + fb.other_seconds + sum(fb.propose_seconds.values())
        if self.score is None:
            base = max(fb.score_seconds, 1e-6)
            size = float(max(fb.batch_size, 1))
            # The prior: this forward was 5% fixed cost and 95% its requests' (see
            # PRIOR_FIXED_SHARE), a draft token costs what a request does, and drafts cost
            # nothing once per forward. The draft points sit at this batch with one and two
            # draft tokens: far out, they would outweigh the few drafts measured.
            fixed = PRIOR_FIXED_SHARE * base
            per = (base - fixed) / size
            self.score = ScoreFit(prior=((0.0, 0.0, fixed), (size, 0.0, base), (size, 1.0, base + per),
                                         (size, 2.0, base + 2 * per)))
        self.score.add(fb.batch_size, fb.draft_tokens, fb.score_seconds)
        self.other = fb.other_seconds if self.other is None else 0.9 * self.other + 0.1 * fb.other_seconds
        for name, seconds in fb.propose_seconds.items():
            n, k = fb.asked.get(name, (1, 1))
            model = self.propose.get(name)
            asked = [st for o in fb.outcomes if (st := requests.get(o.request_id)) is not None and name in st.asked]
            cold = [st for st in asked if name not in st.warm]
            if cold:
                # what this call cost beyond a warm one, per request it was cold for
                warm = model.predict([1.0, n, k, 0.0]) if model is not None else 0.0
                per = max(seconds - warm, 0.0) / len(cold)
                old = self.cold.get(name)
                self.cold[name] = per if old is None else 0.8 * old + 0.2 * per
                continue
            # the tokens its requests had to catch up on: a call after a pause reads more
            behind = sum(st.behind(name) for st in asked)
            if model is None:
                # prior: an eighth fixed, an eighth per request asked, the rest per token of budget
                # (a model proposer runs a forward a token), nothing per token caught up on
                # (until calls after pauses and without tell)
                model = CostModel(prior=[((1.0, 0.0, 0.0, 0.0), seconds / 8), ((1.0, n, 0.0, 0.0), seconds / 4),
                                         ((1.0, n, k, 0.0), seconds)])
                self.propose[name] = model
            model.add([1.0, n, k, float(behind)], seconds)

    def report(self) -> dict[str, object]:
        return {
            "score_cost": list(self.score.coef) if self.score is not None else None,
            "propose_cost": {n: list(m.coef) for n, m in self.propose.items()},
            "cold_call_cost": dict(self.cold),
            "other_seconds": self.other,
        }
