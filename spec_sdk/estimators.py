"""Online estimates for the adaptive policy: decayed acceptance by draft position, and costs
as decayed ridge regressions that start from a prior and follow what the machine measures."""

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
        """Conditional acceptance of positions 0..k-1, each shrunk towards `prior` (as if
        `strength` drafts had gone the prior's way); positions never reached use the prior."""
        out = []
        for j in range(k):
            p = prior[min(j, len(prior) - 1)] if prior else 0.5
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
    """seconds ≈ features · θ, fitted by decayed ridge regression towards a prior θ0.

    The prior keeps the model sensible before the features vary (e.g. every step so far had
    the same draft length, so its slope cannot be told yet); measured steps pull it away.
    """

    prior: Sequence[float]
    scales: Sequence[float] | None = None  # a typical value of each feature
    decay: float = 0.98
    ridge: float = 1.0
    _xtx: torch.Tensor = attrs.field(init=False)
    _xty: torch.Tensor = attrs.field(init=False)
    _theta: torch.Tensor | None = attrs.field(init=False, default=None)
    samples: int = attrs.field(init=False, default=0)

    def __attrs_post_init__(self) -> None:
        n = len(self.prior)
        self._xtx = torch.zeros((n, n), dtype=torch.float64)
        self._xty = torch.zeros(n, dtype=torch.float64)

    def add(self, features: Sequence[float], seconds: float) -> None:
        x = torch.tensor(features, dtype=torch.float64)
        self._xtx.mul_(self.decay).add_(torch.outer(x, x))
        self._xty.mul_(self.decay).add_(x * seconds)
        self._theta = None
        self.samples += 1

    def _ridge(self) -> torch.Tensor:
        # the prior counts as `ridge` observations with every feature at its typical size, so
        # it weighs the same against the data whatever the units of a feature
        scales = torch.tensor(self.scales or [1.0] * len(self.prior), dtype=torch.float64)
        return torch.diag(self.ridge * scales**2)

    @property
    def theta(self) -> torch.Tensor:
        if self._theta is None:
            prior = torch.tensor(self.prior, dtype=torch.float64)
            lam = self._ridge()
            theta = torch.linalg.solve(self._xtx + lam, self._xty + lam @ prior)
            self._theta = theta.clamp_min(0.0)  # no cost is negative; a fit that says so is noise
        return self._theta

    def predict(self, features: Sequence[float]) -> float:
        return float(torch.tensor(features, dtype=torch.float64) @ self.theta)
