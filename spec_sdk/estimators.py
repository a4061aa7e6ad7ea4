"""Online estimates for the adaptive policy: decayed acceptance by draft position, and costs
as decayed least-squares fits that start from a prior and follow what the machine measures."""

from __future__ import annotations

from collections.abc import Sequence

import attrs


@attrs.define
class Acceptance:
    """Decayed counts of how often draft position j was reached (`tried`: every earlier token
    accepted) and accepted. `rate(j)` is P(position j accepted | reached)."""

    decay: float = 0.97
    tried: list[float] = attrs.field(factory=list)
    accepted: list[float] = attrs.field(factory=list)

    def add(self, drafted: int, accepted: int, asked: int = 0) -> None:
        """One verified draft of `drafted` tokens of which the first `accepted` were accepted.
        `asked`: the budget the proposer was given; a draft shorter than that which was accepted
        whole ran out where the next position was reached, which counts as a rejection there
        (a speculator with 4 heads asked for 8 tokens must not look as if 8 could be had)."""
        reached = min(accepted + 1, drafted)
        if asked > drafted == accepted:
            reached = drafted = drafted + 1  # the missing position: reached, not accepted
        if len(self.tried) < drafted:
            grow = drafted - len(self.tried)
            self.tried.extend([0.0] * grow)
            self.accepted.extend([0.0] * grow)
        for j in range(len(self.tried)):
            self.tried[j] *= self.decay
            self.accepted[j] *= self.decay
        for j in range(reached):
            self.tried[j] += 1.0
            if j < accepted:
                self.accepted[j] += 1.0

    @property
    def weight(self) -> float:
        """How much evidence there is: the decayed number of drafts seen."""
        return self.tried[0] if self.tried else 0.0

    def rates(self, k: int, prior: Sequence[float], strength: float = 2.0) -> list[float]:
        """Conditional acceptance of positions 0..k-1, each shrunk towards its prior (as if
        `strength` drafts had gone the prior's way). Past the end of `prior`, a position's prior
        is the estimate of the position before it: deep positions are rarely reached, and
        acceptance there is more like its neighbour's than like a fixed guess."""
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
        return out


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
        self._coef = None
        self.samples += 1

    @property
    def coef(self) -> tuple[float, ...]:
        """θ, each >= 0 (no cost is negative; a fit that says so is noise)."""
        if self._coef is None:
            a = [[x + p for x, p in zip(r, pr)] for r, pr in zip(self._xtx, self._p_xtx)]
            b = [x + p for x, p in zip(self._xty, self._p_xty)]
            self._coef = tuple(max(0.0, v) for v in _solve(a, b))
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
class LineFit:
    """seconds ≈ a + c * tokens for one forward, from a decayed mean per distinct token count.

    Why not one decayed least-squares fit: a batch that stops speculating runs thousands of
    steps at one token count, and their weight would decay away the few steps with drafts
    that are all there is to know the slope from; the slope would fall back to its prior for
    good. Here each token count keeps its own mean (its weight capped at `cap` in the fit, so
    the common count does not drown the rare ones), which ages `age` a step down to `floor`.
    `prior`: two (tokens, seconds) points, each weighing `ridge` steps, that never age.
    """

    prior: tuple[tuple[float, float], tuple[float, float]]
    ridge: float = 0.1
    decay: float = 0.9
    cap: float = 4.0
    age: float = 0.995
    floor: float = 0.5
    max_points: int = 1024
    _buckets: dict[int, list[float]] = attrs.field(init=False, factory=dict)  # tokens -> [mean, weight, step]
    _step: int = attrs.field(init=False, default=0)
    _coef: tuple[float, float] | None = attrs.field(init=False, default=None)

    def add(self, tokens: int, seconds: float) -> None:
        self._step += 1
        b = self._buckets.get(tokens)
        if b is None:
            if len(self._buckets) >= self.max_points:  # forget the stalest token count
                del self._buckets[min(self._buckets, key=lambda t: self._buckets[t][2])]
            self._buckets[tokens] = [seconds, 1.0, float(self._step)]
        else:
            b[1] = b[1] * self.decay + 1.0
            b[0] += (seconds - b[0]) / b[1]
            b[2] = float(self._step)
        self._coef = None

    @property
    def coef(self) -> tuple[float, float]:
        """(a, c), both >= 0."""
        if self._coef is None:
            sw = sx = sy = sxx = sxy = 0.0
            points = [(x, y, self.ridge) for x, y in self.prior]
            for tokens, (mean, weight, step) in self._buckets.items():
                # old means fade, but never below `floor`: with nothing newer at that token
                # count, an old measurement still beats the prior
                w = max(min(weight, self.cap) * self.age ** (self._step - step), self.floor)
                points.append((float(tokens), mean, w))
            for x, y, w in points:
                sw += w
                sx += w * x
                sy += w * y
                sxx += w * x * x
                sxy += w * x * y
            var = sxx - sx * sx / sw
            c = (sxy - sx * sy / sw) / var if var > 1e-12 else 0.0
            c = max(c, 0.0)
            a = max((sy - c * sx) / sw, 0.0)
            self._coef = (a, c)
        return self._coef

    def predict(self, tokens: float) -> float:
        a, c = self.coef
        return a + c * tokens

    @property
    def token_counts(self) -> int:
        """How many distinct token counts were measured: below 2, the slope is the prior's."""
        return len(self._buckets)
