"""AdaptivePolicy: per request and step, the proposer and draft length `k` (0 included) that
maximise the whole batch's expected tokens per second, from estimates measured online.

What it estimates (spec_sdk.estimators), all exponentially decayed so they follow changes:
- per request and proposer, the acceptance of each draft position, shrunk towards the
  proposer's acceptance over all requests (kept apart for greedy and sampled requests);
- the target's score time as a function of the tokens in the forward (roots and drafts);
- each proposer's time per call as a function of requests asked and the largest budget;
- everything else a step costs (verification, bookkeeping), as a constant.

Per step it picks, request by request (two rounds of coordinate ascent over the batch), the
option with the best batch throughput  sum(expected tokens) / (score + proposers + rest).
As the batch grows and the forward gets compute-bound, a draft token costs more in the
score-time fit, and budgets shrink or switch off on their own -- no batch-size table.

Exploring keeps estimates honest: with probability `explore` a request tries a random
(proposer, k); a request whose drafts stopped paying (k = 0) retries each proposer after
`retry_after` steps, the wait doubling after each retry that gets nothing accepted. And every
`probe_every` steps the whole batch runs one step without drafts: when the batch size and the
chosen draft lengths barely change, the tokens in the forward barely change either, and the
cost of a draft token cannot be told from the fixed cost of a step without such a probe.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from spec_sdk.errors import ConfigError
from spec_sdk.estimators import Acceptance, CostModel, expected_tokens
from spec_sdk.policy import Load, StepFeedback
from spec_sdk.proposers.base import RequestView
from spec_sdk.types import Draft

# Before anything is measured: half of each draft position accepted, and a draft token costs
# 5% of a one-token step -- optimistic enough to start speculating and learn the truth.
_PRIOR_ACCEPT = (0.5,)
_PRIOR_TOKEN_SHARE = 0.05


@attrs.define
class _RequestState:
    greedy: bool
    acceptance: dict[str, Acceptance] = attrs.field(factory=dict)
    retry_at: int = 0  # step of the next retry while not speculating; 0: none scheduled
    retry_gap: int = 0
    retries: int = 0  # round-robin over proposers
    exploring: str | None = None


@attrs.define(eq=False)
class AdaptivePolicy:
    """Learns, per request and step, which proposer and `k` (0 included) pay best.

    `proposers`: the names to choose from (None: every proposer the engine has). `max_k`: the
    largest draft, one for all or per proposer. `explore`: the chance a request tries a random
    option in a step. `retry_after`: steps before a request that stopped speculating tries a
    proposer again. `probe_every`: every so many steps the whole batch decodes without drafts,
    which pins down what the forward costs without them (0: never). `seed`: exploration is
    reproducible.
    """

    proposers: Sequence[str] | None = None
    max_k: int | Mapping[str, int] = 8
    explore: float = 0.03
    retry_after: int = 16
    probe_every: int = 64
    seed: int = 0
    _rng: random.Random = attrs.field(init=False)
    _requests: dict[str, _RequestState] = attrs.field(init=False, factory=dict)
    _global: dict[tuple[str, bool], Acceptance] = attrs.field(init=False, factory=dict)
    _score: CostModel | None = attrs.field(init=False, default=None)
    _propose: dict[str, CostModel] = attrs.field(init=False, factory=dict)
    _other: float | None = attrs.field(init=False, default=None)
    _decisions: dict[str, tuple[str | None, int, float]] = attrs.field(init=False, factory=dict)
    _step: int = attrs.field(init=False, default=0)
    _counts: Counter[str] = attrs.field(init=False, factory=Counter)
    _k_total: int = attrs.field(init=False, default=0)
    _estimated: float = attrs.field(init=False, default=0.0)
    _realised: float = attrs.field(init=False, default=0.0)
    _decided: int = attrs.field(init=False, default=0)
    _explorations: int = attrs.field(init=False, default=0)
    # realised over estimated extra tokens (decayed sums): estimates picked as the best of
    # several are biased upwards (the winner's curse); this scales them back
    _cal_real: float = attrs.field(init=False, default=0.0)
    _cal_est: float = attrs.field(init=False, default=0.0)

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

    # -- estimates ---------------------------------------------------------------------

    def _kmax(self, name: str) -> int:
        return self.max_k.get(name, 8) if isinstance(self.max_k, Mapping) else self.max_k

    def _expected(self, state: _RequestState, name: str) -> list[float]:
        """Expected tokens emitted for k = 0..max_k with proposer `name`, for this request."""
        k = self._kmax(name)
        pooled = self._global.get((name, state.greedy))
        prior = pooled.rates(k, _PRIOR_ACCEPT) if pooled is not None else list(_PRIOR_ACCEPT) * k
        own = state.acceptance.get(name)
        rates = own.rates(k, prior) if own is not None else prior
        cal = self.calibration
        return [1.0 + cal * (e - 1.0) for e in expected_tokens(rates)]

    @property
    def calibration(self) -> float:
        if self._cal_est < 1.0:
            return 1.0
        return min(max(self._cal_real / self._cal_est, 0.25), 1.5)

    # -- the policy hooks ------------------------------------------------------------------

    def begin_step(self, reqs: Sequence[RequestView], load: Load, proposers: Sequence[str]) -> None:
        self._step += 1
        names = [n for n in (self.proposers if self.proposers is not None else proposers) if n in proposers]
        self._decisions = {}
        if not names or not reqs:
            return
        states = [self._requests.setdefault(r.id, _RequestState(r.params.greedy)) for r in reqs]
        if self._score is None:
            # nothing measured yet: speculate with every request at a middling k to learn
            for r, s, i in zip(reqs, states, range(len(reqs))):
                name = names[(self._step + i) % len(names)]
                self._decide(r.id, s, name, min(4, self._kmax(name)), None)
            return
        if self.probe_every and self._step % self.probe_every == 0:
            return  # a probe: every request at k = 0 (no decisions means no drafts)
        gains = {n: [self._expected(s, n) for s in states] for n in names}
        choice: list[tuple[str | None, int]] = [(None, 0)] * len(reqs)
        forced: set[int] = set()
        # at most about `explore` of the batch explores or retries in one step (at least one)
        budget = max(1, round(self.explore * len(reqs)))
        order = list(range(len(reqs)))
        self._rng.shuffle(order)
        for i in order:
            states[i].exploring = None
            if budget == 0:
                continue
            pick = self._exploration(states[i], names)
            if pick is not None:
                choice[i] = pick
                forced.add(i)
                budget -= 1
        self._best_options(choice, forced, gains, names)
        for i, (r, s) in enumerate(zip(reqs, states)):
            name, k = choice[i]
            estimate = gains[name][i][k] if name is not None else 1.0
            self._decide(r.id, s, name, k, estimate)

    def _exploration(self, state: _RequestState, names: Sequence[str]) -> tuple[str, int] | None:
        if state.retry_at and self._step >= state.retry_at:
            name = names[state.retries % len(names)]
            state.retries += 1
            state.retry_at = 0
            state.exploring = name
            return name, min(2, self._kmax(name))
        if self.explore and self._rng.random() < self.explore:
            name = self._rng.choice(list(names))
            state.exploring = name
            return name, self._rng.randint(1, self._kmax(name))
        return None

    def _best_options(self, choice: list[tuple[str | None, int]], forced: set[int],
                      gains: Mapping[str, list[list[float]]], names: Sequence[str]) -> None:
        """Two rounds of coordinate ascent: each request in turn takes its best option given
        the others'. The batch's totals are kept incrementally, so trying an option costs
        O(proposers), not O(batch)."""
        batch = _Totals(self, len(choice))
        for i, (name, k) in enumerate(choice):
            batch.add(name, k, gains[name][i][k] if name is not None else 1.0)
        options: list[tuple[str | None, int]] = [(None, 0)]
        options += [(n, k) for n in names for k in range(1, self._kmax(n) + 1)]
        for _ in range(2 if len(choice) <= 16 else 1):  # a big batch: one round is close enough
            for i in range(len(choice)):
                if i in forced:
                    continue
                name, k = choice[i]
                batch.add(name, k, -(gains[name][i][k] if name is not None else 1.0), remove=True)
                others = batch.proposer_seconds()
                others_total = sum(t for t, _, _ in others.values())
                best, best_rate = choice[i], -1.0
                for option in options:
                    gain = gains[option[0]][i][option[1]] if option[0] is not None else 1.0
                    rate = batch.rate_with(option[0], option[1], gain, others, others_total)
                    if rate > best_rate * (1 + 1e-9):
                        best, best_rate = option, rate
                choice[i] = best
                batch.add(best[0], best[1], gains[best[0]][i][best[1]] if best[0] is not None else 1.0)
        # Coordinate ascent can stall where everyone speculates and the forward is so slow that
        # one more draft still looks worth it; compare with nobody speculating (explorers aside).
        quiet = _Totals(self, len(choice))
        for i, (name, k) in enumerate(choice):
            if i in forced:
                quiet.add(name, k, gains[name][i][k] if name is not None else 1.0)
            else:
                quiet.add(None, 0, 1.0)
        if quiet.rate() > batch.rate():
            for i in range(len(choice)):
                if i not in forced:
                    choice[i] = (None, 0)

    def _decide(self, rid: str, state: _RequestState, name: str | None, k: int, estimate: float | None) -> None:
        if name is None or k == 0:
            self._decisions[rid] = (None, 0, 1.0)
            return
        self._decisions[rid] = (name, k, estimate if estimate is not None else 0.0)

    def plan(self, req: RequestView, load: Load) -> Mapping[str, int]:
        name, k, _ = self._decisions.get(req.id, (None, 0, 1.0))
        return {name: k} if name is not None and k > 0 else {}

    def choose(self, req: RequestView, drafts: Mapping[str, Draft | None]) -> Draft | None:
        name, _, _ = self._decisions.get(req.id, (None, 0, 1.0))
        return drafts.get(name) if name is not None else None

    def feedback(self, fb: StepFeedback) -> None:
        tokens = fb.batch_size + fb.draft_tokens  # every token in the forward, roots included
        if self._score is None:
            base = max(fb.score_seconds, 1e-6)
            # the prior: a forward of a few tokens costs about what a forward of one does (small
            # batches are bound by reading the weights): 90% of this step fixed, 10% shared by
            # its tokens. Root and draft tokens cost the same in one forward, so the batch size
            # changing (requests come and go) teaches the per-token cost as well as the draft
            # lengths changing does.
            self._score = CostModel(prior=[((1.0, 0.0), 0.9 * base), ((1.0, tokens), base)])
        self._score.add([1.0, tokens], fb.score_seconds)
        self._other = fb.other_seconds if self._other is None else 0.9 * self._other + 0.1 * fb.other_seconds
        for name, seconds in fb.propose_seconds.items():
            n, k = fb.asked.get(name, (1, 1))
            model = self._propose.get(name)
            if model is None:
                # prior: a third fixed, a third per request asked, a third per token of budget
                model = CostModel(prior=[((1.0, 0.0, 0.0), seconds / 3), ((1.0, n, 0.0), 2 * seconds / 3),
                                         ((1.0, n, k), seconds)])
                self._propose[name] = model
            model.add([1.0, n, k], seconds)
        cal = self.calibration  # what this step's estimates were scaled by
        for o in fb.outcomes:
            decision = self._decisions.get(o.request_id)
            if decision is not None and decision[0] is not None:
                self._decided += 1
                self._counts[decision[0]] += 1
                self._k_total += decision[1]
                self._estimated += decision[2]
                self._realised += o.emitted
                if decision[2] > 0:  # the first steps speculate blind, with no estimate
                    self._cal_real = 0.995 * self._cal_real + (o.emitted - 1)
                    self._cal_est = 0.995 * self._cal_est + (decision[2] - 1) / cal
            state = self._requests.get(o.request_id)
            if state is None:
                continue
            if o.proposer is not None and o.drafted:
                state.acceptance.setdefault(o.proposer, Acceptance()).add(o.drafted, o.accepted)
                self._global.setdefault((o.proposer, o.greedy), Acceptance(decay=0.995)).add(o.drafted, o.accepted)
            if state.exploring is not None and state.exploring == o.proposer:
                self._explorations += 1
                paid = o.drafted > 0 and o.accepted * 2 >= o.drafted
                state.retry_gap = self.retry_after if paid else min(max(state.retry_gap, self.retry_after) * 2, 1024)
            if decision is not None and decision[0] is None and not state.retry_at:
                # not speculating: try again later, later still after each retry that did not pay
                state.retry_gap = state.retry_gap or self.retry_after
                state.retry_at = self._step + state.retry_gap

    def forget(self, request_id: str) -> None:
        self._requests.pop(request_id, None)

    def report(self) -> dict[str, Any]:
        """What the policy decided and why: proposer shares, mean k, estimated vs realised
        tokens per speculating step, explorations, and the fitted costs (seconds)."""
        decided = max(self._decided, 1)
        return {
            "steps": self._step,
            "speculating_request_steps": self._decided,
            "chosen": {n: c / decided for n, c in self._counts.items()},
            "mean_k": self._k_total / decided,
            "estimated_tokens_per_step": self._estimated / decided,
            "realised_tokens_per_step": self._realised / decided,
            "explorations": self._explorations,
            "calibration": self.calibration,
            "score_cost": [float(x) for x in self._score.theta] if self._score is not None else None,
            "propose_cost": {n: [float(x) for x in m.theta] for n, m in self._propose.items()},
            "other_seconds": self._other,
        }


class _Totals:
    """A batch's planned tokens, draft tokens and per-proposer budgets, for quick what-ifs.
    Costs are the fitted coefficients as plain floats: no tensor work in the inner loop."""

    __slots__ = ("base", "per_token", "propose", "tokens", "drafted", "ks")

    def __init__(self, policy: AdaptivePolicy, size: int) -> None:
        assert policy._score is not None
        a, c = policy._score.coef
        self.base = a + c * size + (policy._other or 0.0)
        self.per_token = c
        self.propose = {n: m.coef for n, m in policy._propose.items()}
        self.tokens = 0.0
        self.drafted = 0
        self.ks: dict[str, Counter[int]] = {}

    def add(self, name: str | None, k: int, gain: float, remove: bool = False) -> None:
        self.tokens += gain
        if name is None or k == 0:
            return
        sign = -1 if remove else 1
        self.drafted += sign * k
        counts = self.ks.setdefault(name, Counter())
        counts[k] += sign
        if counts[k] == 0:
            del counts[k]

    def _propose_time(self, name: str, requests: int, k: int) -> float:
        coef = self.propose.get(name)
        if coef is None or requests == 0:
            return 0.0
        return coef[0] + coef[1] * requests + coef[2] * k

    def proposer_seconds(self) -> dict[str, tuple[float, int, int]]:
        """Per proposer in use: (seconds, requests, largest budget) as the batch stands."""
        out = {}
        for n, counts in self.ks.items():
            requests = sum(counts.values())
            kmax = max(counts, default=0)
            out[n] = (self._propose_time(n, requests, kmax), requests, kmax)
        return out

    def rate(self) -> float:
        """Tokens per second of the batch as it stands."""
        others = self.proposer_seconds()
        return self.rate_with(None, 0, 0.0, others, sum(t for t, _, _ in others.values()))

    def rate_with(self, name: str | None, k: int, gain: float, others: dict[str, tuple[float, int, int]],
                  others_total: float) -> float:
        """Tokens per second of the batch if the request being decided took (name, k)."""
        seconds = self.base + self.per_token * (self.drafted + (k if name is not None else 0)) + others_total
        if name is not None and k > 0:
            t, requests, kmax = others.get(name, (0.0, 0, 0))
            seconds += self._propose_time(name, requests + 1, max(kmax, k)) - t
        total = self.tokens + gain
        return total / seconds if seconds > 0 else 0.0
