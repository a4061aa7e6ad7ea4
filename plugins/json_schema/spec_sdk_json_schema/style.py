"""Whitespace: JSON lets it go almost anywhere, so on its own it would stop every forced run.

The `Style` decides it instead: `json.dumps`-like separators (", " and ": " by default, or
pretty printing with an indent), replaced by what the model itself writes as soon as it
writes it. Where the model's whitespace strays from the style, only the structural
characters are forced.
"""

from __future__ import annotations

from collections.abc import Sequence

import attrs

WS = frozenset(" \t\n\r")


@attrs.define
class Style:
    item_ws: str = " "  # after ","
    key_ws: str = " "  # after ":"
    indent: int | None = None  # pretty printing: a newline and indent * depth spaces

    def after_open(self, depth: int) -> str:
        return "" if self.indent is None else "\n" + " " * (self.indent * depth)

    def after_comma(self, depth: int) -> str:
        return self.item_ws if self.indent is None else "\n" + " " * (self.indent * depth)

    def before_close(self, depth: int) -> str:
        return "" if self.indent is None else "\n" + " " * (self.indent * (depth - 1))

    def learn(self, where: str, gap: str, depth: int) -> None:
        """The model wrote `gap` before an element (`where`: "open" or "comma") or a value ("colon")."""
        if where == "colon":
            self.key_ws = gap
        elif "\n" in gap:
            spaces = len(gap) - gap.rfind("\n") - 1
            self.indent = spaces // depth if depth and spaces % depth == 0 else spaces
        else:
            self.indent = None
            if where == "comma":
                self.item_ws = gap


def next_chars(candidates: Sequence[str], gap: str) -> frozenset[str]:
    """First characters of what may follow, given the whitespace `gap` written so far."""
    out = set()
    for cand in candidates:
        if cand.startswith(gap) and len(cand) > len(gap):
            out.add(cand[len(gap)])
        else:  # the gap left the style (or used it up): only the structural part is sure
            out.add(cand.lstrip("".join(WS))[0])
    return frozenset(out)
