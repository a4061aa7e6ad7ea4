"""AdaptivePolicy: per request and step, the proposer and draft length `k` (0 included) that
maximise the whole batch's expected tokens per second, from estimates measured online.

What it estimates (spec_sdk.adaptive_estimates, spec_sdk.adaptive_cost), all exponentially decayed
so they follow changes:
- per request and proposer, the acceptance of each draft position, shrunk towards the
  proposer's acceptance over all requests (kept apart for greedy and sampled requests);
- the target's score time: fixed + per request + per draft token (a request reads its own KV
  cache, a draft token only adds a query to a cache that is read anyway, so they are priced apart);
- each proposer's time per call as a function of requests asked and the largest budget;
- everything else a step costs (verification, bookkeeping), as a constant.

Per step it picks, request by request (two rounds of coordinate ascent over the batch), the
option with the best batch throughput  sum(expected tokens) / (score + proposers + rest).
As the batch grows and the forward gets compute-bound, a draft token costs more in the
score-time fit, and budgets shrink or switch off on their own -- no batch-size table.

Cheap proposers (a call costs at most 1% of a step) are also asked in the shadow: besides the
request's chosen proposer (or none), and their drafts are scored in hindsight against the tokens
the step emitted -- position j of a draft counts as reached when the emitted tokens matched its
first j, accepted when they matched it too (for a draft that is not sampled, matching the
target's token is exactly what acceptance is, also under sampling) and unknown past what was
emitted. So the acceptance of every cheap proposer stays current for every request, without
exploration and without putting its drafts in the forward.

Nothing is assumed to be free. The first step decodes without drafts (it measures the forward);
until the data say otherwise a draft token is priced like a request, as if the forward were
compute-bound (the pessimistic end: speculation has to prove it pays), and a proposer is a
candidate only once one of its calls has been timed. The fixed cost of a forward with drafts
(ScoreFit's `e`) is left out of the per-request ascent's choice of whether to draft -- no one
request's draft may pay it where the batch's drafts together do -- but not of which draft (it
is paid whatever the length; spec_sdk.adaptive_plan.best_options), and is weighed against
nobody speculating at the end.

A greedy request explores in the shadow too: the proposer's draft is asked for and scored in
hindsight, never verified -- for greedy decoding that is the same knowledge, without the draft
in the forward (a sampled request must verify: acceptance there is not a match; and so must
the first explorations, until 8 forwards with drafts have been timed).

Exploring is paid from a budget of time (spec_sdk.adaptive_state.ExploreBudget): about
`explore` of each step, faster while a proposer is still to be learned, capped at a few steps'
worth. An exploration -- the first timed call of a proposer, a proposer too dear for the shadow
whose pooled acceptance for this kind of request rests on fewer than 4 drafts, a retry, or a
random (proposer, k) of a proposer too dear for the shadow with probability `explore` -- runs
only when its estimated extra cost (its draft tokens in the forward, the call, a first call's
cache fill spread over the request) fits; one that does not fit tries a one-token draft. A
request whose drafts stopped paying (k = 0) retries each proposer after `retry_after` steps,
the wait doubling after each retry that gets nothing accepted. And every `probe_every` steps
the whole batch runs one step without drafts: when the batch size and the chosen draft lengths
barely change, the cost of a draft token cannot be told from the fixed cost of a step without
such a probe (probes that find the forward's cost where the fit had it come further apart, up
to 8x: spec_sdk.adaptive_state).

A request whose speculation gained it nothing lately sleeps (spec_sdk.adaptive_sleep): for a
while the policy plans, asks and explores nothing for it -- deciding costs even where nothing
is drafted, and where no proposer helps that cost was the whole of the slowdown.

A sampled request's options are weighed with hope (spec_sdk.adaptive_estimates): a proposer's first-position
acceptance, pooled over sampled requests, is raised by its standard error, as tokens for every
draft length alike. Only verified drafts teach acceptance under sampling; without the hope a
proposer whose first few drafts were unlucky was seldom verified again, however well it pays.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import attrs

from spec_sdk.errors import ConfigError
from spec_sdk.adaptive_hand import HandJudge, draft_seconds
from spec_sdk.adaptive_lengths import DraftLengths
from spec_sdk.adaptive_cost import Costs
from spec_sdk.adaptive_explore import LEARN_BOOST, LEARN_DRAFTS, Explorer
from spec_sdk.adaptive_fill import Fill
from spec_sdk.adaptive_plan import BatchPlan, best_options
from spec_sdk.adaptive_sleep import Gains
from spec_sdk.adaptive_tally import Tally
from spec_sdk.adaptive_learn import learn_acceptance
from spec_sdk.adaptive_estimates import Estimates, has_chances
from spec_sdk.adaptive_state import ExploreBudget, ProbeSchedule, RequestState
from spec_sdk.adaptive_trying import explorations
from spec_sdk.estimators import reach_chances
from spec_sdk.policy import DEFER, Load, Outcome, StepFeedback, _Defer
from spec_sdk.proposers.base import RequestView
from spec_sdk.types import Draft

# (a proposer whose call for one request costs at most adaptive_cost.SHADOW_SHARE of a step is asked in the
# shadow; shadows are asked for a random part of the batch sized to cost about that share)
# ...and the shadow calls of a step may cost this share of it together: in a big batch the
# drafts in hand are how speculation pays at all (the average draft does not, a strong match
# does), and at 1% only a third of a 64-request batch had any
_SHADOW_BUDGET = 0.03

@attrs.define(eq=False)
class AdaptivePolicy:
    """Learns, per request and step, which proposer and `k` (0 included) pay best.

    `proposers`: the names to choose from (None: every proposer the engine has). `max_k`: the
    largest draft, one for all or per proposer. `explore`: the chance a request tries a random
    option in a step (and the share of time exploring may spend). `retry_after`: steps before a
    request that stopped speculating tries a proposer again. `probe_every`: every so many steps
    the whole batch decodes without drafts, which pins down what the forward costs without them
    (0: never). `seed`: exploration is reproducible.
    """

    proposers: Sequence[str] | None = None
    max_k: int | Mapping[str, int] = 8
    explore: float = 0.03
    retry_after: int = 16
    probe_every: int = 64
    seed: int = 0
    _rng: random.Random = attrs.field(init=False)
    _requests: dict[str, RequestState] = attrs.field(init=False, factory=dict)
    # acceptance per request and pooled, and its calibration (spec_sdk.adaptive_estimates)
    _est: Estimates = attrs.field(init=False)
    _cost: Costs = attrs.field(init=False)  # the forward, the calls, the rest (spec_sdk.adaptive_cost)
    _decisions: dict[str, tuple[str | None, int, float]] = attrs.field(init=False, factory=dict)
    _step: int = attrs.field(init=False, default=0)
    _tally: Tally = attrs.field(init=False, factory=Tally)  # what it decided, for the report
    _explorer: Explorer = attrs.field(init=False)  # what to explore, and its budget (spec_sdk.adaptive_explore)
    # the cheap drafts in hand, judged by their scores (spec_sdk.adaptive_hand)
    _hand: HandJudge = attrs.field(init=False, factory=HandJudge)
    _drafting: set[str] = attrs.field(init=False, factory=set)  # requests whose drafts are in this forward
    _batch: int = attrs.field(init=False, default=0)
    # requests whose drafts in hand were worth their tokens (this step; decayed over the last)
    _worth_taking: int = attrs.field(init=False, default=0)
    _takers: float = attrs.field(init=False, default=0.0)
    # drafts in hand put in the first forwards to measure a draft token (spec_sdk.adaptive_fill)
    _fill: Fill = attrs.field(init=False, factory=Fill)
    # caps on k for proposers that draft fewer tokens than asked (spec_sdk.adaptive_lengths)
    _lengths: DraftLengths = attrs.field(init=False, factory=DraftLengths)
    # what speculation gains requests lately: where a new request's gain starts (spec_sdk.adaptive_sleep)
    _gains_by_kind: Gains = attrs.field(init=False, factory=Gains)
    _asleep: set[str] = attrs.field(init=False, factory=set)  # requests asleep this step
    _may_sleep: bool = attrs.field(init=False, default=False)  # nothing is still to be learned
    # the proposers the plan priced at the last planned step: a look asked all of them, or it did
    # not put speculation to the test (spec_sdk.adaptive_sleep)
    _priced: tuple[str, ...] = attrs.field(init=False, default=())
    _request_steps: int = attrs.field(init=False, default=0)
    _slept: int = attrs.field(init=False, default=0)  # request-steps asleep
    _probes: ProbeSchedule = attrs.field(init=False)
    _probing: bool = attrs.field(init=False, default=False)  # this step is a probe
    _max_ks: dict[str, int] | None = attrs.field(init=False, default=None)  # max_k, if per proposer
    _max_k: int = attrs.field(init=False, default=8)  # ...else max_k

    def __attrs_post_init__(self) -> None:
        if not 0.0 <= self.explore <= 1.0:
            raise ConfigError(f"explore must be in [0, 1], got {self.explore}")
        if self.probe_every < 0:
            raise ConfigError(f"probe_every must be >= 0, got {self.probe_every}")
        if self.retry_after < 1:
            raise ConfigError(f"retry_after must be >= 1, got {self.retry_after}")
        ks = self.max_k.values() if isinstance(self.max_k, Mapping) else [self.max_k]
        if any(k < 1 for k in ks):
            raise ConfigError(f"max_k must be >= 1, got {self.max_k}")
        self._rng = random.Random(self.seed)
        self._explorer = Explorer(self.explore, self.retry_after, self._rng, ExploreBudget(self.explore))
        self._cost = Costs(max(ks))
        self._est = Estimates(self._kmax)
        self._probes = ProbeSchedule(self.probe_every)
        self._max_ks = dict(self.max_k) if isinstance(self.max_k, Mapping) else None
        self._max_k = self.max_k if isinstance(self.max_k, int) else 8

    # -- estimates ---------------------------------------------------------------------

    def _kmax(self, name: str) -> int:
        # (asked tens of times a step: the type test once, in __attrs_post_init__)
        k = self._max_ks.get(name, 8) if self._max_ks is not None else self._max_k
        cap = self._lengths.caps.get(name)
        return k if cap is None else min(k, cap)

    def calibration(self, name: str, greedy: bool = True, k: int | None = None) -> float:
        """Realised over estimated extra tokens of `name`'s verified drafts (Calibration.of)."""
        return self._est.calibration.of(name, greedy, k)

    # -- the policy hooks ------------------------------------------------------------------

    def begin_step(self, reqs: Sequence[RequestView], load: Load, proposers: Sequence[str]) -> None:
        self._step += 1
        names = [n for n in (self.proposers if self.proposers is not None else proposers) if n in proposers]
        self._decisions, self._fill.left = {}, 0
        self._drafting, self._batch, self._asleep, self._probing = set(), len(reqs), set(), False
        self._takers, self._worth_taking = 0.5 * self._takers + 0.5 * self._worth_taking, 0
        if not names or not reqs:
            return
        states, asleep = [], set()
        for i, r in enumerate(reqs):
            s = self._requests.get(r.id)
            if s is None:
                s = self._requests[r.id] = RequestState(r.params.greedy)
            states.append(s)
            s.shadows, s.asked, s.probe, s.held, s.budgets = (), (), None, {}, {}
            s.room = r.params.max_new_tokens - (len(r.tokens) - r.prompt_len)
            s.length = len(r.tokens)
            if s.sleep is None:
                s.sleep = self._gains_by_kind.start(s.greedy)
            # a request whose speculation stopped paying is left alone for a while: no plan, no
            # shadows, no exploration (spec_sdk.adaptive_sleep)
            if s.sleep.asleep(self._step):
                asleep.add(i)
        self._asleep = {reqs[i].id for i in asleep}
        self._request_steps, self._slept = self._request_steps + len(reqs), self._slept + len(asleep)
        if len(asleep) == len(reqs):
            return  # (and nothing is still to be learned: nobody sleeps until it is)
        ex = self._explorer
        ex.note_batch(names, states, self._est.pooled)
        if self._cost.score is None:
            return  # nothing measured yet: this step decodes without drafts and times the forward
        if self._probes.due(self._step):
            self._probing = True
            return  # a probe: every request at k = 0 (no decisions means no drafts)
        if self._lengths.changed:  # a cap on k changed: every request's estimates are recomputed
            for s in self._requests.values():
                s.expected, s.calibrated, s.calibrated_with = {}, {}, {}
            self._lengths.changed = False
        plan = self._plan(len(reqs))  # what draft tokens add to this forward, for pricing explorations
        ex.hopeless = ex.find_hopeless(names, plan, self._kmax)
        explorable = [n for n in names if n not in ex.hopeless]
        gains = self._est.gains(states, names, self._step)
        order = list(range(len(reqs)))
        self._rng.shuffle(order)
        choice, forced = explorations(ex, self._cost, states, asleep, order, names, explorable, gains, plan,
                                      self._step, self._kmax)
        # a proposer no call of which was ever timed is left to exploration: it may be expensive
        timed = [n for n in names if n in self._cost.propose]
        self._priced = tuple(n for n in timed if n not in ex.hopeless)
        colds: dict[tuple[int, str], float] = {}  # asked in both rounds of the ascent; fixed for the step

        def cold(i: int, n: str) -> float:
            c = colds.get((i, n))
            if c is None:
                c = colds[(i, n)] = self._cold_cost(states[i], n)
            return c

        best_options(lambda: self._plan(len(choice)), choice, forced | asleep, self._est.hoped(states, names, gains), timed,
                     cold)
        for i, (r, s) in enumerate(zip(reqs, states)):
            name, k = choice[i]
            # an exploration was not picked for its estimate: it says nothing of the winner's curse
            estimate = gains[name][i][k] if name is not None and i not in forced else None
            # a verified exploration's estimate: no winner's curse in it, it anchors the calibration
            s.explore_estimate = gains[name][i][k] if name is not None and i in forced else 0.0
            self._decide(r.id, s, name, k, estimate)
        # a proposer whose first call was cheap is asked in the shadow before a warm call of it
        # was timed: its warm calls cost no more, and that is how they get timed (one at a
        # time, in explorations, took a big batch tens of steps to reach the suffix proposer)
        cheap_first = [n for n in names if n not in timed and n in self._cost.cold
                       and self._cost.cold[n] <= self._cost.shadow_bar()]
        awake = [i for i in range(len(states)) if i not in asleep]
        self._pick_shadows([states[i] for i in awake], [choice[i] for i in awake], timed + cheap_first)
        # a proposer never called is asked in the shadow for one request: a first call tells
        # whether it is cheap (else the explorations, one a step, may take long to reach it)
        for n in names:
            if n not in self._cost.cold and n not in self._cost.propose and not any(n in s.shadows for s in states):
                i = awake[self._rng.randrange(len(awake))]
                if choice[i][0] != n:
                    states[i].shadows += (n,)
        self._drafting = {r.id for r, (name, k) in zip(reqs, choice) if name is not None and k > 0}
        self._fill.plan(self._cost.score, len(reqs), sum(k for _, k in choice))
        for s, (name, _) in zip(states, choice):
            if s.probe is not None and s.probe != name and s.probe not in s.shadows:
                s.shadows += (s.probe,)

    def _pick_shadows(self, states: Sequence[RequestState], choice: Sequence[tuple[str | None, int]],
                      names: Sequence[str]) -> None:
        """Which requests ask which cheap proposers in the shadow this step."""
        if self._cost.last_step <= 0:
            return
        cheap = [n for n in names if not self._cost.dear(n, self._kmax(n))]
        if not cheap:
            return
        # one call asks a proposer for all its shadow requests: its fixed part is paid once
        calls = [self._cost.batch_call(n, self._kmax(n)) for n in cheap]
        room = _SHADOW_BUDGET * self._cost.last_step - sum(fixed for fixed, _ in calls)
        per_request = sum(each for _, each in calls)
        share = min(1.0, max(room, 0.0) / max(per_request * len(states), 1e-12))
        for s, (name, _) in zip(states, choice):
            if share >= 1.0 or self._rng.random() < share:
                s.shadows = tuple(n for n in cheap if n != name)

    def _cold_cost(self, state: RequestState, name: str) -> float:
        return self._cost.cold_cost(state, name)

    def _call_cost(self, name: str, k: int | None = None) -> float:
        """A warm call of `name` for one request asked for `k` tokens (default: its longest)."""
        return self._cost.call_cost(name, self._kmax(name) if k is None else k)

    def _plan(self, size: int) -> BatchPlan:
        return self._cost.plan(size)

    def _decide(self, rid: str, state: RequestState, name: str | None, k: int, estimate: float | None) -> None:
        if name is None or k == 0:
            self._decisions[rid] = (None, 0, 1.0)
            return
        self._decisions[rid] = (name, k, estimate if estimate is not None else 0.0)

    def plan(self, req: RequestView, load: Load) -> Mapping[str, int]:
        name, k, _ = self._decisions.get(req.id, (None, 0, 1.0))
        state = self._requests.get(req.id)
        out = {n: self._kmax(n) for n in state.shadows} if state is not None else {}
        if name is not None and k > 0:
            out[name] = k  # asked last: the engine asks in plan order
        if state is not None:
            state.budgets = out
        return out

    def choose(self, req: RequestView, drafts: Mapping[str, Draft | None]) -> Draft | None | Literal[_Defer.DEFER]:
        name, k, estimate = self._decisions.get(req.id, (None, 0, 1.0))
        state = self._requests.get(req.id)
        if state is None:
            return drafts.get(name) if name is not None else None
        # (choose sees a round's drafts with the earlier rounds': each is learned from once)
        self._lengths.learn(state.budgets, state.room, {n: d for n, d in drafts.items() if n not in state.held})
        HandJudge.hold(drafts, state.held)  # the shadows' drafts among them, scored in hindsight
        # What was really called, not what was planned: a planned call that a draft in hand
        # saved read none of the tokens, and counted as asked it hid the catch-up its next
        # call pays, and the cost fit put that catch-up into the fixed cost of every call.
        state.asked = tuple(drafts)
        if any(n not in drafts for n in state.shadows):
            return DEFER  # shadows first (past the plan's end, DEFER means no draft)
        if self._fill.left > 0 and name is None:
            filled = self._fill.take(drafts, self._step)
            if filled is not None:
                return self._take(req.id, drafts, filled[0], filled[1], None)
        if self._cost.score is None or (name is not None and state.exploring == name):
            # nothing measured yet, or an exploration: verified to learn, whatever it drafts
            return (drafts[name] if name in drafts else DEFER) if name is not None else None
        a, b, per_token, once = self._cost.score.coef
        size = max(self._batch, 1)
        rate = size / max(a + b * size + (self._cost.other or 0.0), 1e-9)  # the batch's quiet rate
        # The forward's once-per-forward draft cost (`once`) is this request's only if no other
        # drafts -- and then what its tokens add is the measured curve (others drafting: the
        # line's slope). Even then it is shared with the requests expected to take a draft in
        # hand after it: last steps' count of drafts in hand worth their tokens without it.
        # Charged whole to whoever comes first, no one draft in a big batch paid it, no one
        # drafted, and the batch stalled without drafts where a fixed suffix k=4 ran 1.2x.
        alone = not (self._drafting - {req.id})
        curve = self._cost.curve(size) if alone else None
        pooled = lambda n, kk: self._est.pooled_rates(n, state.greedy, kk, LEARN_DRAFTS)  # noqa: E731
        if not alone:
            once = 0.0
        elif once > 0:
            share = once / max(self._takers, 1.0)
            if curve is not None:
                curve = [0.0] + [max(c - once + share, 0.0) for c in curve[1:]]
            once = share
        got = self._hand.pick(drafts, state.greedy, pooled, per_token, once, rate, curve)
        if got is not None and got[0] is None and once > 0:
            # worth its tokens, had the once-per-forward cost been paid by another?
            free = None if curve is None else [0.0] + [max(c - once, 0.0) for c in curve[1:]]
            got_free = self._hand.pick(drafts, state.greedy, pooled, per_token, 0.0, rate, free)
            self._worth_taking += got_free is not None and got_free[0] is not None
        else:
            self._worth_taking += got is not None and got[0] is not None
        if name is not None and name not in drafts:
            # The plan's proposer is still to be asked (a dear one: shadows come first). Its call
            # is saved when a draft in hand is worth more than its draft is expected to be.
            if got is None or got[0] is None:
                return DEFER
            gain = max(estimate - 1.0, 0.0)  # the plan's calibrated estimate
            if got[2] < gain - rate * (draft_seconds(k, per_token, once, curve) + self._call_cost(name, k)):
                return DEFER
            self._hand.saved += 1
            return self._take(req.id, drafts, got[0], got[1], name)
        planned = drafts[name] if name is not None else None
        if got is None:
            return planned  # nothing known of these drafts' scores yet
        self._hand.count(got[0], got[1], name, len(planned) if planned is not None else 0)
        return self._take(req.id, drafts, got[0], got[1], name)

    def _take(self, rid: str, drafts: Mapping[str, Draft | None], pick: str | None, k: int,
              planned: str | None) -> Draft | None:
        """`pick`'s draft cut to `k` tokens (None: no draft), the decision recorded to match."""
        chosen = drafts.get(pick) if pick is not None else None
        if chosen is None or k == 0:
            self._decisions[rid] = (None, 0, 1.0)
            self._drafting.discard(rid)
            return None
        if pick != planned or k != len(chosen):  # no plan estimate: kept out of the calibration
            self._decisions[rid] = (pick, k, 0.0)
        self._drafting.add(rid)
        cut = chosen.truncated(k)
        # the engine tells a cut draft's proposer by its source
        return cut if cut is chosen or cut.source == pick else attrs.evolve(cut, source=pick)

    def feedback(self, fb: StepFeedback) -> None:
        if self._probing and self._cost.score is not None and fb.draft_tokens == 0:
            self._probes.judge(self._step, self._cost.score.predict(fb.batch_size, 0), fb.score_seconds)
        self._cost.learn(fb, self._requests)
        step_seconds = self._cost.last_step
        # while some proposer is still to be learned, credit comes in faster (LEARN_BOOST); a
        # step of sleeping requests alone learned nothing (and they sleep only once nothing is
        # left to learn), and is the step where the policy's time matters most: not asked
        everyone_slept = len(self._asleep) == fb.batch_size > 0
        learning = False if everyone_slept else self._explorer.learning(self._est.pooled)
        emitted = sum(o.emitted for o in fb.outcomes)
        batch_rate = emitted / max(step_seconds, 1e-9)
        self._explorer.record_rate(fb.batch_size, batch_rate)
        # what these tokens would have taken without drafts: a quiet step emits one per request
        # (not asked of a step everyone slept through: nothing was drafted, and predicting it
        # refits the forward's cost every few steps for nothing)
        saved = 0.0
        if not everyone_slept:
            quiet = self._cost.quiet_step(fb.batch_size)
            saved = max(emitted * quiet / max(fb.batch_size, 1) - step_seconds, 0.0)
        self._explorer.budget.earn(step_seconds, LEARN_BOOST if learning else 1.0, saved)
        if everyone_slept:
            return  # nothing was planned, asked or drafted: nothing else to learn from
        self._may_sleep = not learning and bool(self._cost.propose)
        for o in fb.outcomes:
            st = self._requests.get(o.request_id)
            if st is not None:
                st.warm.update(st.asked)
                st.seen.update((n, st.length) for n in st.asked)
                if st.sleep is not None and o.request_id not in self._asleep:
                    # (a policy that never explores could not correct a look's estimate awake either)
                    tried = o.drafted > 0 or self.explore == 0 or all(n in st.asked for n in self._priced)
                    st.sleep.record(self._step, o.accepted, self._may_sleep, tried)
                    self._gains_by_kind.add(st.greedy, o.accepted, st.sleep)
        for o in fb.outcomes:
            decision = self._decisions.get(o.request_id)
            if decision is not None and decision[0] is not None:
                self._tally.count(decision[0], decision[1], decision[2], o.emitted)
                st = self._requests.get(o.request_id)
                explored = st.explore_estimate if st is not None and o.proposer == decision[0] else 0.0
                if decision[2] > 0 or explored > 0:
                    self._est.calibration.add(decision[0], o.greedy, decision[1], decision[2] or explored,
                                          _expected_emitted(o))
            state = self._requests.get(o.request_id)
            if state is None:
                continue
            asked = decision[1] if decision is not None and decision[0] == o.proposer else 0
            probe = learn_acceptance(self._est, self._hand, state, o, asked, self._kmax)
            if probe is not None and state.probe is not None:
                self._explored(state, state.probe, *probe, batch_rate)
            if state.exploring is not None and state.exploring == o.proposer:
                self._explored(state, o.proposer, o.drafted, o.accepted, batch_rate)
            if decision is not None and decision[0] is None and not state.retry_at:
                # not speculating: try again later, later still after each retry that did not pay
                state.retry_gap = state.retry_gap or self.retry_after
                state.retry_at = self._step + state.retry_gap

    def _explored(self, state: RequestState, name: str, drafted: int, accepted: int, batch_rate: float) -> None:
        """An exploration's outcome, for the exploration's pace and the request's next retry."""
        assert self._cost.score is not None
        extra = self._cost.score.coef[2] * drafted + self._call_cost(name, max(drafted, 1))
        self._explorer.judge(state, name, drafted, accepted, batch_rate, extra)

    def forget(self, request_id: str) -> None:
        self._requests.pop(request_id, None)

    def report(self) -> dict[str, Any]:
        """What the policy decided and why: proposer shares, mean k, estimated vs realised
        tokens per speculating step, explorations, and the fitted costs (seconds)."""
        return {
            "steps": self._step,
            **self._tally.report(),
            # request-steps the policy left alone, their speculation having gained nothing lately
            "asleep_share": self._slept / max(self._request_steps, 1),
            "explorations": self._explorer.explorations,
            "explorations_by_reason": dict(self._explorer.why),  # time (first timed call), learn, retry, random
            "exploration_pace": self._explorer.budget.scale,
            **self._est.report(),  # pooled acceptance by position, the calibration
            # cheap drafts judged in hand: plan's draft kept, another taken, dropped; score calibration
            "in_hand": self._hand.report(),
            **self._cost.report(),
        }


def _expected_emitted(o: Outcome) -> float:
    """The tokens the step was to be expected to emit: for a sampled chain, one plus the chance
    of each draft token to be accepted with all before it (Verdict's chances, rather than the
    one draw of them); else what it emitted."""
    if o.proposer is None or not has_chances(o) or o.emitted != o.accepted + 1:  # none, or cut at a stop
        return float(o.emitted)
    return 1.0 + sum(reach_chances(o.token_chances)[1:])
