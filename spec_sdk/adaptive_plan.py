"""A batch's plan as the adaptive policy weighs it: expected tokens over predicted seconds,
kept incrementally so that trying one request's option costs O(proposers), not O(batch)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping


class BatchPlan:
    """A batch's planned tokens, draft tokens and per-proposer budgets, for quick what-ifs.
    Costs are the fitted coefficients as plain floats: no tensor work in the inner loop."""

    __slots__ = ("base", "per_token", "first_draft", "propose", "tokens", "drafted", "ks")

    def __init__(self, score: tuple[float, float, float, float], other: float,
                 propose: Mapping[str, tuple[float, ...]], size: int) -> None:
        a, b, c, e = score  # fixed, per request, per draft token, once if any draft (ScoreFit)
        self.base = a + b * size + other
        self.per_token = c
        self.first_draft = e
        self.propose = propose
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
                  others_total: float, cold: float = 0.0) -> float:
        """Tokens per second of the batch if the request being decided took (name, k); `cold`:
        the one-time seconds of that proposer's first call for this request."""
        drafted = self.drafted + (k if name is not None else 0)
        seconds = self.base + self.per_token * drafted + others_total + cold
        if drafted > 0:
            seconds += self.first_draft
        if name is not None and k > 0:
            t, requests, kmax = others.get(name, (0.0, 0, 0))
            seconds += self._propose_time(name, requests + 1, max(kmax, k)) - t
        total = self.tokens + gain
        return total / seconds if seconds > 0 else 0.0
