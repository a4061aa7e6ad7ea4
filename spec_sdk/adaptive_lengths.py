"""The longest draft worth asking each proposer for, learned from what it drafts.

A proposer may draft fewer tokens than it is asked for, always the same number: a speculator
with 4 heads asked for 8 drafts 4. Planned at 8, its tokens past the 4th were priced, and their
acceptance guessed from the prior, for drafts that never had them. Once `FIXED_DRAFTS` drafts
in a row were shorter than asked and all of one length, it is capped there; a draft longer
than that lifts the cap. A proposer whose drafts vary in length (a suffix match) is never capped.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from spec_sdk.adaptive_state import asked_within
from spec_sdk.types import Draft

FIXED_DRAFTS = 8


@attrs.define
class DraftLengths:
    runs: dict[str, tuple[int, int]] = attrs.field(factory=dict)  # (length, drafts in a row of it)
    caps: dict[str, int] = attrs.field(factory=dict)
    changed: bool = False  # a cap was set or lifted since the caller last looked

    def learn(self, budgets: Mapping[str, int], room: int, drafts: Mapping[str, Draft | None]) -> None:
        """Drafts for one request, each asked for `budgets[name]` tokens with `room` left
        (the engine clips a budget to the room, less the target's own token)."""
        for n, d in drafts.items():
            asked = asked_within(budgets.get(n, 0), room)
            if d is None or asked <= 0:
                continue
            length, run = self.runs.get(n, (0, 0))
            if len(d) < asked:
                self.runs[n] = (length, run + 1) if len(d) == length else (len(d), 1)
            elif len(d) > length and n in self.runs:
                del self.runs[n]  # drafted longer: no fixed length
            else:
                continue
            length, run = self.runs.get(n, (0, 0))
            if run >= FIXED_DRAFTS and self.caps.get(n) != length:
                self.caps[n], self.changed = length, True
            elif n not in self.runs and n in self.caps:
                del self.caps[n]
                self.changed = True
