"""A character-level parser of a JSON document's prefix under a compiled schema, and the text
the schema forces next.

The parser is a stack of frames (frames.py): the root, then one per value being written. It
is fed the model's output one character at a time and never re-reads it. `forced()` runs a
copy of it forward while exactly one next character is possible (whitespace as the `Style`
says, style.py) and returns what it wrote.
"""

from __future__ import annotations

import copy

import attrs

from spec_sdk_json_schema.frames import (
    CONSUMED,
    DONE,
    REFEED,
    REJECT,
    ArrayFrame,
    Frame,
    LiteralFrame,
    NumberFrame,
    ObjectFrame,
    Options,
    StringFrame,
)
from spec_sdk_json_schema.schema import NUMBER_START, AnyValue, Array, Choice, Literal, Node, Number, Object, String, start_chars
from spec_sdk_json_schema.style import WS, Style

ANY_LITERAL = Literal(("true", "false", "null"))


@attrs.define
class RootFrame(Frame):
    node: Node
    started: bool = False

    def feed(self, ch: str, m: Machine) -> int:
        if ch in WS:
            return CONSUMED
        if self.started:
            return REJECT  # text after the document
        self.started = True
        return CONSUMED if m.open_value(self.node, ch) else REJECT

    def options(self, m: Machine) -> Options:
        return (frozenset(), True) if self.started else (start_chars(self.node), False)


class Machine:
    """The parse state of one request's output; `failed` once the output left the schema."""

    def __init__(self, node: Node, style: Style | None = None) -> None:
        self.stack: list[Frame] = [RootFrame(node)]
        self.style = style or Style()
        self.failed = False

    def clone(self) -> Machine:
        other = Machine.__new__(Machine)
        # frames hold only immutable values, so a shallow copy of each is a full copy
        other.stack = [copy.copy(f) for f in self.stack]
        other.style = copy.copy(self.style)
        other.failed = self.failed
        return other

    @property
    def complete(self) -> bool:
        """The document is whole (only whitespace may follow)."""
        root = self.stack[0]
        return not self.failed and len(self.stack) == 1 and isinstance(root, RootFrame) and root.started

    def feed(self, text: str) -> bool:
        for ch in text:
            if self.failed or not self._feed_char(ch):
                return False
        return not self.failed

    def forced(self, limit: int = 256) -> str:
        """The text every schema-valid continuation (in this style) starts with."""
        return self.forced_and_next(limit)[0]

    def forced_and_next(self, limit: int = 256) -> tuple[str, frozenset[str] | None]:
        """The forced text, and the characters that may come after it (None: too many to list,
        as inside a string; the document's end is not a character, so it is not listed)."""
        if self.failed:
            return "", frozenset()
        sim = self.clone()
        out: list[str] = []
        while True:
            chars, may_end = sim._next_chars()
            if chars is None or len(chars) != 1 or may_end or len(out) >= limit:
                return "".join(out), chars
            (ch,) = chars
            if not sim._feed_char(ch):
                return "".join(out), frozenset()
            out.append(ch)

    def open_value(self, node: Node, ch: str) -> bool:
        """Start a value of `node` with its first character `ch` (pushing its frame if it has more)."""
        if isinstance(node, Choice):
            found = next((o for o in node.options if ch in start_chars(o)), None)
            if found is None:
                return False
            node = found
        if isinstance(node, AnyValue):
            node = _any_node(ch)
        depth = 1 + sum(isinstance(f, (ObjectFrame, ArrayFrame)) for f in self.stack)
        if isinstance(node, Literal):
            texts = tuple(t for t in node.texts if t[0] == ch)
            if not texts:
                return False
            if any(len(t) > 1 for t in texts):
                self.stack.append(LiteralFrame(texts, 1))
            return True
        if isinstance(node, String) and ch == '"':
            self.stack.append(StringFrame())
        elif isinstance(node, Number) and ch in NUMBER_START:
            self.stack.append(NumberFrame.starting(node.integer, ch))
        elif isinstance(node, Object) and ch == "{":
            self.stack.append(ObjectFrame(node, depth))
        elif isinstance(node, Array) and ch == "[":
            self.stack.append(ArrayFrame(node, depth))
        else:
            return False
        return True

    def _feed_char(self, ch: str) -> bool:
        while True:
            result = self.stack[-1].feed(ch, self)
            if result == CONSUMED:
                return True
            if result == DONE:
                self.stack.pop()
                return True
            if result == REFEED:
                self.stack.pop()
                continue
            self.failed = True
            return False

    def _next_chars(self) -> tuple[frozenset[str] | None, bool]:
        """The characters that may come next (None: too many), and whether the document may
        end here instead — a frame that may end lets its parent's characters come next too."""
        chars: set[str] = set()
        for frame in reversed(self.stack):
            options, may_end = frame.options(self)
            if options is None:
                return None, False
            chars |= options
            if not may_end:
                return frozenset(chars), False
        return frozenset(chars), True


def _any_node(ch: str) -> Node:
    if ch == "{":
        return Object(values=AnyValue())
    if ch == "[":
        return Array(AnyValue())
    if ch == '"':
        return String()
    if ch in NUMBER_START:
        return Number()
    return ANY_LITERAL
