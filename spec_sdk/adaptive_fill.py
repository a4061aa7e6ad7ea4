"""Drafts in hand put in the first forwards to measure what a draft token costs.

Until `MEASURE_WIDE` forwards had two draft tokens or more, at least one for every other request
(ScoreFit.wide_steps), cheap drafts in hand fill a forward up to that many tokens (at most 4
from one request), whatever their worth. Explorations alone put a token or two in a forward
of many requests, which cannot tell what a draft token costs from the forward's noise, nor one
token from the once-per-forward cost: the pessimistic prior (a draft token costs what a request
does) stood. A batch of 16 where a fixed suffix k=4 ran 1.13x then decoded without drafts, and
a single sampled request waited 50 steps to afford a first try of the draft model (priced at
four steps for its four tokens). What this risks, if the prior is right: one request's worth
for every other request, three times; what it costs where it is wrong: far less, and the
drafts' accepted tokens pay some of it back.
"""

from __future__ import annotations

from collections.abc import Mapping

import attrs

from spec_sdk.estimators import ScoreFit
from spec_sdk.types import Draft

MEASURE_WIDE = 3
# ...and at most this many forwards are filled so, wide or not: where the drafts in hand are
# short (one-token suffix matches in sampled chat) no forward gets wide, and the fill went on
# for good -- 203 of 478 steps of one request carried a one-token draft accepted ~12%, at 0.88x
# of decoding without drafts
MEASURE_FILLS = 4 * MEASURE_WIDE
# the most tokens one request's draft puts in a fill
_PER_REQUEST = 4


@attrs.define
class Fill:
    """The draft tokens still to put in this step's forward, and the forwards filled so far."""

    left: int = 0
    fills: int = 0
    _filled_at: int = 0  # the last step filled

    def plan(self, score: ScoreFit, size: int, planned: int) -> None:
        """This step's forward of `size` requests already has `planned` draft tokens."""
        if score.wide_steps < MEASURE_WIDE and self.fills < MEASURE_FILLS:
            self.left = max(0, score.wide(size) - planned)

    def take(self, drafts: Mapping[str, Draft | None], step: int) -> tuple[str, int] | None:
        """The first draft in hand and how many of its tokens to put in, or None if none is."""
        for n, d in drafts.items():
            if d is not None and len(d):
                k = min(len(d), self.left, _PER_REQUEST)
                self.left -= k
                if self._filled_at != step:
                    self.fills, self._filled_at = self.fills + 1, step
                return n, k
        return None
