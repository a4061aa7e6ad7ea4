"""Online estimates for the adaptive policy: decayed acceptance by draft position, and costs
as decayed least-squares fits that start from a prior and follow what the machine measures."""

from __future__ import annotations

from collections.abc import Sequence

import attrs

# Fits are refitted at most this often (in samples) once warm: see CostModel.coef, ScoreFit.coef.
REFIT_EVERY = 8
# Acceptance.rates results kept per estimate, at most
_MEMO_LIMIT = 16


@attrs.define
class Acceptance:
    """Decayed counts of how often draft position j was reached (`tried`: every earlier token
    accepted) and accepted. `rate(j)` is P(position j accepted | reached)."""

    decay: float = 0.97
    tried: list[float] = attrs.field(factory=list)
    accepted: list[float] = attrs.field(factory=list)
    # rates() by its arguments until the counts change: a step asks a pooled estimate for the
    # same rates many times (every request's gains, the hope, the drafts in hand), and at
    # batch 1 recomputing them was the policy's largest single cost
    _memo: dict[tuple[int, tuple[float, ...], float], list[float]] = attrs.field(
        init=False, factory=dict, eq=False, repr=False)

    def add(self, drafted: int, accepted: int, asked: int = 0) -> None:
        """One verified draft of `drafted` tokens of which the first `accepted` were accepted.
        `asked`: the budget the proposer was given; a draft shorter than that which was accepted
        whole ran out where the next position was reached, which counts as a rejection there
        (a speculator with 4 heads asked for 8 tokens must not look as if 8 could be had)."""
        reached = min(accepted + 1, drafted)
        if asked > drafted == accepted:
            reached = drafted = drafted + 1  # the missing position: reached, not accepted
        self._age(drafted)
        for j in range(reached):
            self.tried[j] += 1.0
            if j < accepted:
                self.accepted[j] += 1.0

    def add_chances(self, token_chances: Sequence[float], chances: Sequence[float], asked: int = 0) -> None:
        """One verified draft under rejection sampling, as the chances verification computed
        (Verdict) rather than the one draw of them that happened: position j counts as reached
        by the chance every earlier token was accepted, and as accepted by that times its own
        chance. The counts `add` would get on average, with far less noise: a sampled draft's
        few accept/reject coin flips said little, and a draft model that pays looked like one
        that does not after four unlucky drafts. A draft shorter than `asked` reaches the
        position past its end by the chance all of it was accepted (see `add`)."""
        drafted = len(chances)
        reach = reach_chances(token_chances[:drafted])
        self._age(drafted + (asked > drafted))
        for j, c in enumerate(chances):
            self.tried[j] += reach[j]
            self.accepted[j] += reach[j] * min(max(c, 0.0), 1.0)
        if asked > drafted:
            self.tried[drafted] += reach[drafted]

    def _age(self, positions: int) -> None:
        """Room for `positions` positions, and every count decayed by one draft."""
        self._memo.clear()
        if len(self.tried) < positions:
            grow = positions - len(self.tried)
            self.tried.extend([0.0] * grow)
            self.accepted.extend([0.0] * grow)
        for j in range(len(self.tried)):
            self.tried[j] *= self.decay
            self.accepted[j] *= self.decay

    @property
    def weight(self) -> float:
        """How much evidence there is: the decayed number of drafts seen."""
        return self.tried[0] if self.tried else 0.0

    def rates(self, k: int, prior: Sequence[float], strength: float = 2.0) -> list[float]:
        """Conditional acceptance of positions 0..k-1, each shrunk towards its prior (as if
        `strength` drafts had gone the prior's way). Past the end of `prior`, a position's prior
        is the estimate of the position before it: deep positions are rarely reached, and
        acceptance there is more like its neighbour's than like a fixed guess. The list
        returned is shared with later calls: not to be changed."""
        key = (k, tuple(prior), strength)
        memo = self._memo.get(key)
        if memo is not None:
            return memo
        out: list[float] = []
        tried, accepted = self.tried, self.accepted
        seen = len(tried)
        p = 0.5
        for j in range(k):
            if j < len(prior):
                p = prior[j]
            elif out:
                p = out[-1]
            # an unreached position (t = 0) is its prior: (0 + s p) / (0 + s)
            out.append((accepted[j] + strength * p) / (tried[j] + strength) if j < seen and tried[j] + strength > 0 else p)
        if len(self._memo) >= _MEMO_LIMIT:
            # a request's own counts may stay put while the pooled prior it is asked with
            # moves every step: each step a new key
            self._memo.clear()
        self._memo[key] = out
        return out

    def doubt(self, rates: Sequence[float], strength: float = 2.0) -> list[float]:
        """The standard error of each of `rates` (as `rates` returned them): how far the
        evidence behind position j, `tried[j]` drafts plus `strength` of prior, leaves it open."""
        tried = self.tried
        return [(r * (1.0 - r) / ((tried[j] if j < len(tried) else 0.0) + strength)) ** 0.5
                for j, r in enumerate(rates)]


def reach_chances(token_chances: Sequence[float]) -> list[float]:
    """The chance each draft position 0..n is reached: every earlier drawn token accepted."""
    reach = [1.0]
    for r in token_chances:
        reach.append(reach[-1] * min(max(r, 0.0), 1.0))
    return reach


def matched_prefix(draft: Sequence[int], emitted: Sequence[int]) -> int:
    """How many of a draft's first tokens the step's emitted tokens match: for a draft that was
    not sampled, exactly its accepted tokens (also under sampling), cut off where `emitted` ends."""
    n = 0
    for x, y in zip(draft, emitted):
        if x != y:
            break
        n += 1
    return n


def expected_tokens(rates: Sequence[float]) -> list[float]:
    """Expected tokens a step emits with a draft of length k, for k = 0..len(rates): one from
    the target plus the expected run of accepted draft tokens."""
    out = [1.0]
    run = 1.0
    for r in rates:
        run *= r
        out.append(out[-1] + run)
    return out


@attrs.define
class CostModel:
    """seconds ≈ features · θ, fitted by decayed least squares with a prior.

    The prior is a few pseudo-observations (`prior`: (features, seconds) pairs) that count as
    `ridge` measured steps each and never decay: they keep the fit sensible before the features
    vary (every step so far had the same draft length, say) and are outweighed once they do.
    Plain floats throughout: the systems are 2x2 or 3x3 and refitted every step, where a
    tensor solve cost ~100 us, more than the rest of the policy's step.
    """

    prior: Sequence[tuple[Sequence[float], float]]
    decay: float = 0.98
    ridge: float = 0.25
    _xtx: list[list[float]] = attrs.field(init=False)
    _xty: list[float] = attrs.field(init=False)
    _p_xtx: list[list[float]] = attrs.field(init=False)
    _p_xty: list[float] = attrs.field(init=False)
    _coef: tuple[float, ...] | None = attrs.field(init=False, default=None)
    _since: int = attrs.field(init=False, default=0)  # adds since the last fit
    samples: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        n = len(self.prior[0][0])
        self._xtx = [[0.0] * n for _ in range(n)]
        self._xty = [0.0] * n
        # a hair of plain ridge, so that a prior that pins fewer directions than there are
        # features still gives a solvable system
        self._p_xtx = [[1e-12 if i == j else 0.0 for j in range(n)] for i in range(n)]
        self._p_xty = [0.0] * n
        for features, seconds in self.prior:
            _accumulate(self._p_xtx, self._p_xty, features, seconds, self.ridge)

    def add(self, features: Sequence[float], seconds: float) -> None:
        d = self.decay
        for row in self._xtx:
            for j in range(len(row)):
                row[j] *= d
        self._xty = [v * d for v in self._xty]
        _accumulate(self._xtx, self._xty, features, seconds, 1.0)
        self._since += 1
        self.samples += 1
        if self.samples <= REFIT_EVERY:
            self._coef = None

    @property
    def coef(self) -> tuple[float, ...]:
        """θ, each >= 0 (no cost is negative; a fit that says so is noise). Refitted while the
        first `REFIT_EVERY` samples come in, then once every `REFIT_EVERY`: one sample moves a
        decayed fit little, and refitting every proposer's on every step was a tenth of the
        policy's time."""
        if self._coef is None or self._since >= REFIT_EVERY:
            self._since = 0
            a = [[x + p for x, p in zip(r, pr)] for r, pr in zip(self._xtx, self._p_xtx)]
            b = [x + p for x, p in zip(self._xty, self._p_xty)]
            # refitted without the terms that come out negative, not clamped: a clamped term
            # leaves the others as fitted alongside its negative value (with its catch-up
            # slope clamped, a draft model's fit priced a call at ~11 ms where calls cost 2-4)
            self._coef = tuple(_nonnegative_solve(a, b))
        return self._coef

    def predict(self, features: Sequence[float]) -> float:
        return sum(c * x for c, x in zip(self.coef, features))


def _accumulate(xtx: list[list[float]], xty: list[float], x: Sequence[float], y: float, w: float) -> None:
    for i, xi in enumerate(x):
        xty[i] += w * xi * y
        row = xtx[i]
        for j, xj in enumerate(x):
            row[j] += w * xi * xj


def _solve(a: list[list[float]], b: list[float]) -> list[float]:
    """Gaussian elimination with partial pivoting (a is small, symmetric positive definite)."""
    n = len(b)
    m = [row[:] + [b[i]] for i, row in enumerate(a)]
    for c in range(n):
        p = max(range(c, n), key=lambda r: abs(m[r][c]))
        m[c], m[p] = m[p], m[c]
        if m[c][c] == 0.0:
            continue
        for r in range(c + 1, n):
            f = m[r][c] / m[c][c]
            if f:
                for j in range(c, n + 1):
                    m[r][j] -= f * m[c][j]
    x = [0.0] * n
    for r in range(n - 1, -1, -1):
        s = m[r][n] - sum(m[r][j] * x[j] for j in range(r + 1, n))
        x[r] = s / m[r][r] if m[r][r] != 0.0 else 0.0
    return x


@attrs.define
class ScoreFit:
    """A forward's seconds ≈ a + b * requests + c * draft tokens + e * [any draft tokens], from
    a decayed mean per distinct (requests, draft tokens) pair.

    Requests and draft tokens are priced apart because they cost differently: each request in
    the batch reads its own KV cache (on a CPU at batch 64 that reading is most of the forward),
    a draft token only adds a query to a cache that is read anyway. One slope for both learns
    the price of a draft token from requests coming and going, and overprices it several times.
    `e` is what a forward with drafts costs beyond one without, whatever their number (another
    attention pass, masks): the first draft in a batch pays it, the others share it.

    Why buckets rather than one decayed least-squares fit: a batch that stops speculating runs
    thousands of steps without drafts, and their weight would decay away the few steps with
    drafts that are all there is to know `c` and `e` from; they would fall back to their prior
    for good. Each pair keeps its own mean (its weight capped at `cap` in the fit, so the common
    pair does not drown the rare ones), which ages `age` a step down to `floor`.
    `prior`: (requests, draft tokens, seconds) points, each weighing `ridge` steps, that never age
    (keep them near the data: a point far out has leverage beyond its weight).
    """

    prior: Sequence[tuple[float, float, float]]
    ridge: float = 0.1
    decay: float = 0.9
    cap: float = 4.0
    age: float = 0.995
    floor: float = 0.5
    max_points: int = 512
    _buckets: dict[tuple[int, int], list[float]] = attrs.field(init=False, factory=dict)  # -> [mean, weight, step]
    _step: int = attrs.field(init=False, default=0)
    _coef: tuple[float, float, float, float] | None = attrs.field(init=False, default=None)
    _since: int = attrs.field(init=False, default=0)  # adds to known pairs since the last fit
    drafted_steps: int = attrs.field(init=False, default=0)  # forwards with draft tokens measured
    # ...of them, those with at least two draft tokens and one for every other request: fewer in
    # a big batch cannot tell what a draft token costs from the noise of its forward, and one
    # token alone cannot tell it from the once-per-forward cost `e`
    wide_steps: int = attrs.field(init=False, default=0)

    def add(self, requests: int, drafts: int, seconds: float) -> None:
        self._step += 1
        self.drafted_steps += drafts > 0
        self.wide_steps += drafts >= self.wide(requests)
        key = (requests, drafts)
        b = self._buckets.get(key)
        if b is None:
            if len(self._buckets) >= self.max_points:  # forget the stalest pair
                del self._buckets[min(self._buckets, key=lambda t: self._buckets[t][2])]
            self._buckets[key] = [seconds, 1.0, float(self._step)]
            self._coef = None  # a new pair is new information: refit at once
        else:
            b[1] = b[1] * self.decay + 1.0
            b[0] += (seconds - b[0]) / b[1]
            b[2] = float(self._step)
            self._since += 1

    @staticmethod
    def wide(requests: int) -> int:
        """Draft tokens a forward of `requests` needs to count in `wide_steps`."""
        return max(2, (requests + 1) // 2)

    @property
    def coef(self) -> tuple[float, float, float, float]:
        """(a, b, c, e), each >= 0; refitted at once when a new (requests, draft tokens) pair
        came in, else once every `REFIT_EVERY` steps (a known pair's mean moves slowly)."""
        if self._coef is None or self._since >= REFIT_EVERY:
            self._since = 0
            xtx = [[1e-12 if i == j else 0.0 for j in range(4)] for i in range(4)]
            xty = [0.0] * 4
            for r, d, y in self.prior:
                _accumulate(xtx, xty, _score_features(r, d), y, self.ridge)
            for (r, d), (mean, weight, step) in self._buckets.items():
                # old means fade, but never below `floor`: with nothing newer for that pair,
                # an old measurement still beats the prior
                w = max(min(weight, self.cap) * self.age ** (self._step - step), self.floor)
                _accumulate(xtx, xty, _score_features(r, d), mean, w)
            a, b, c, e = _nonnegative_solve(xtx, xty)
            self._coef = (a, b, c, e)
        return self._coef

    def predict(self, requests: float, drafts: float) -> float:
        return sum(k * x for k, x in zip(self.coef, _score_features(requests, drafts)))

    def draft_curve(self, requests: int, upto: int, trust: float = 2.0) -> list[float]:
        """Seconds that 0..`upto` draft tokens add to a forward of `requests`: the fit's
        `e + c * d`, but where the pair (requests, d) was measured, its mean over the measured
        mean without drafts, shrunk to the fit by `trust` steps' worth of weight.

        Why not the fit alone: on a CPU the cost of a few extra rows is far from linear (here
        one and two draft tokens added 19% and 50% to a 1-request forward, eight 92%: a line
        through them overprices two tokens by a sixth of a step, and the draft model's best
        length looked just short of paying). Made non-decreasing: more tokens never cost less."""
        _, _, c, e = self.coef
        quiet = self._buckets.get((requests, 0))
        curve = [0.0]
        for d in range(1, upto + 1):
            cost = e + c * d
            b = self._buckets.get((requests, d)) if quiet is not None else None
            if b is not None and quiet is not None:
                w = min(b[1], self.cap) * self.age ** (self._step - b[2])
                cost = (w * max(b[0] - quiet[0], 0.0) + trust * cost) / (w + trust)
            curve.append(max(cost, curve[-1]))
        return curve


def _score_features(requests: float, drafts: float) -> tuple[float, float, float, float]:
    return (1.0, float(requests), float(drafts), 1.0 if drafts > 0 else 0.0)


def _nonnegative_solve(a: list[list[float]], b: list[float]) -> list[float]:
    """The least-squares solution with every coefficient >= 0: terms the unconstrained solve
    makes negative are dropped (held at 0) and the rest solved again (no cost is negative; a
    fit that says so is noise)."""
    free = list(range(len(b)))
    while True:
        x = _solve([[a[i][j] for j in free] for i in free], [b[i] for i in free])
        if all(v >= 0.0 for v in x) or len(free) == 1:
            out = [0.0] * len(b)
            for i, v in zip(free, x):
                out[i] = max(v, 0.0)
            return out
        free = [i for i, v in zip(free, x) if v >= 0.0] or free[:1]

