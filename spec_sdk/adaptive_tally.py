"""What the adaptive policy decided, counted for its report: proposer shares, mean `k`, and
the estimated against the realised tokens of the steps it chose on an estimate."""

from __future__ import annotations

from collections import Counter
from typing import Any

import attrs


@attrs.define
class Tally:
    decided: int = 0  # speculating request-steps
    judged: int = 0  # ...of them, decided on an estimate (explorations carry none)
    chosen: Counter[str] = attrs.field(factory=Counter)
    k_total: int = 0
    estimated: float = 0.0
    realised: float = 0.0

    def count(self, name: str, k: int, estimate: float, emitted: int) -> None:
        """One speculating request-step: `name` at `k`, with the plan's `estimate` of its tokens
        (0: none, an exploration) and the tokens it `emitted`."""
        self.decided += 1
        self.chosen[name] += 1
        self.k_total += k
        if estimate > 0:
            self.judged += 1
            self.estimated += estimate
            self.realised += emitted

    def report(self) -> dict[str, Any]:
        decided = max(self.decided, 1)
        return {
            "speculating_request_steps": self.decided,
            "chosen": {n: c / decided for n, c in self.chosen.items()},
            "mean_k": self.k_total / decided,
            # over the speculating request-steps chosen on an estimate (explorations aside)
            "estimated_tokens_per_step": self.estimated / max(self.judged, 1),
            "realised_tokens_per_step": self.realised / max(self.judged, 1),
        }
