"""Online estimates for the adaptive policy: decayed acceptance by draft position, and costs
as decayed least-squares fits that start from a prior and follow what the machine measures."""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import torch


@attrs.define
class Acceptance:
    """Decayed counts of how often draft position j was reached (`tried`: every earlier token
    accepted) and accepted. `rate(j)` is P(position j accepted | reached)."""

    decay: float = 0.97
    tried: list[float] = attrs.field(factory=list)
    accepted: list[float] = attrs.field(factory=list)

    def add(self, drafted: int, accepted: int) -> None:
        """One verified draft of `drafted` tokens of which the first `accepted` were accepted."""
        reached = min(accepted + 1, drafted)
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
        for j in range(k):
            p = prior[j] if j < len(prior) else (out[-1] if out else 0.5)
            t = self.tried[j] if j < len(self.tried) else 0.0
            a = self.accepted[j] if j < len(self.accepted) else 0.0
            out.append((a + strength * p) / (t + strength) if t + strength > 0 else p)
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
    """

    prior: Sequence[tuple[Sequence[float], float]]
    decay: float = 0.98
    ridge: float = 0.25
    _xtx: torch.Tensor = attrs.field(init=False)
    _xty: torch.Tensor = attrs.field(init=False)
    _p_xtx: torch.Tensor = attrs.field(init=False)
    _p_xty: torch.Tensor = attrs.field(init=False)
    _theta: torch.Tensor | None = attrs.field(init=False, default=None)
    _coef: tuple[float, ...] = attrs.field(init=False, default=())
    samples: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        n = len(self.prior[0][0])
        self._xtx = torch.zeros((n, n), dtype=torch.float64)
        self._xty = torch.zeros(n, dtype=torch.float64)
        self._p_xtx = torch.zeros((n, n), dtype=torch.float64)
        self._p_xty = torch.zeros(n, dtype=torch.float64)
        for features, seconds in self.prior:
            x = torch.tensor(features, dtype=torch.float64)
            self._p_xtx += self.ridge * torch.outer(x, x)
            self._p_xty += self.ridge * x * seconds
        # a hair of plain ridge, so that a prior that pins fewer directions than there are
        # features still gives a solvable system
        self._p_xtx += 1e-12 * torch.eye(n, dtype=torch.float64)

    def add(self, features: Sequence[float], seconds: float) -> None:
        x = torch.tensor(features, dtype=torch.float64)
        self._xtx.mul_(self.decay).add_(torch.outer(x, x))
        self._xty.mul_(self.decay).add_(x * seconds)
        self._theta = None
        self.samples += 1

    @property
    def theta(self) -> torch.Tensor:
        if self._theta is None:
            theta = torch.linalg.solve(self._xtx + self._p_xtx, self._xty + self._p_xty)
            self._theta = theta.clamp_min(0.0)  # no cost is negative; a fit that says so is noise
            self._coef = tuple(self._theta.tolist())
        return self._theta

    @property
    def coef(self) -> tuple[float, ...]:
        """θ as plain floats: the policy evaluates thousands of what-ifs a step."""
        if self._theta is None:
            _ = self.theta
        return self._coef

    def predict(self, features: Sequence[float]) -> float:
        return sum(c * x for c, x in zip(self.coef, features))
