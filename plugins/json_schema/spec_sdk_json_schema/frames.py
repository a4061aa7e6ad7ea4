"""The parser's frames: one per JSON value being written (literal, string, number, object,
array). A frame is fed one character and answers whether it took it, finished with it,
finished before it (the character is its container's), or refused it; `options` says which
characters may come next, for the forced text.
"""

from __future__ import annotations

import functools
import json
from typing import TYPE_CHECKING

import attrs

from spec_sdk_json_schema.schema import AnyValue, Array, Node, Object, start_chars
from spec_sdk_json_schema.style import WS, next_chars

if TYPE_CHECKING:
    from spec_sdk_json_schema.machine import Machine

CONSUMED, DONE, REFEED, REJECT = range(4)
HEX = frozenset("0123456789abcdefABCDEF")

Options = tuple[frozenset[str] | None, bool]  # (next characters, None: too many to force; may the frame end here)


class Frame:
    def feed(self, ch: str, m: Machine) -> int:
        raise NotImplementedError

    def options(self, m: Machine) -> Options:
        raise NotImplementedError


@attrs.define
class LiteralFrame(Frame):
    texts: tuple[str, ...]
    pos: int

    def feed(self, ch: str, m: Machine) -> int:
        left = tuple(t for t in self.texts if len(t) > self.pos and t[self.pos] == ch)
        if not left:
            return REFEED if any(len(t) == self.pos for t in self.texts) else REJECT
        self.texts, self.pos = left, self.pos + 1
        return DONE if all(len(t) == self.pos for t in left) else CONSUMED

    def options(self, m: Machine) -> Options:
        return frozenset(t[self.pos] for t in self.texts if len(t) > self.pos), any(len(t) == self.pos for t in self.texts)


@attrs.define
class StringFrame(Frame):
    escape: int = 0  # 0: plain; 1: after a backslash; 2..5: inside \uXXXX

    def feed(self, ch: str, m: Machine) -> int:
        if self.escape == 1:
            if ch not in '"\\/bfnrtu':
                return REJECT
            self.escape = 2 if ch == "u" else 0
        elif self.escape:
            if ch not in HEX:
                return REJECT
            self.escape = 0 if self.escape == 5 else self.escape + 1
        elif ch == '"':
            return DONE
        elif ch == "\\":
            self.escape = 1
        elif ord(ch) < 0x20:
            return REJECT
        return CONSUMED

    def options(self, m: Machine) -> Options:
        return None, False


# number states: after "-", after a leading "0", in the integer digits, after ".", in the
# fraction, after "e", after the exponent's sign, in the exponent
_SIGN, _ZERO, _INT, _DOT, _FRAC, _E, _ESIGN, _EXP = range(8)
_NUMBER_ENDS = frozenset({_ZERO, _INT, _FRAC, _EXP})


@attrs.define
class NumberFrame(Frame):
    integer: bool
    state: int

    @classmethod
    def starting(cls, integer: bool, ch: str) -> NumberFrame:
        """The frame after the number's first character (a digit or "-")."""
        return cls(integer, _SIGN if ch == "-" else _ZERO if ch == "0" else _INT)

    def feed(self, ch: str, m: Machine) -> int:
        state, digit = self.state, ch.isdigit() and ch.isascii()
        if state in (_SIGN,) and digit:
            self.state = _ZERO if ch == "0" else _INT
        elif state == _INT and digit or state in (_DOT, _FRAC) and digit:
            self.state = _INT if state == _INT else _FRAC
        elif state in (_ZERO, _INT) and ch == "." and not self.integer:
            self.state = _DOT
        elif state in (_ZERO, _INT, _FRAC) and ch in "eE" and not self.integer:
            self.state = _E
        elif state == _E and ch in "+-":
            self.state = _ESIGN
        elif state in (_E, _ESIGN, _EXP) and digit:
            self.state = _EXP
        elif state in _NUMBER_ENDS:
            return REFEED  # the number ended; this character is the container's
        else:
            return REJECT
        return CONSUMED

    def options(self, m: Machine) -> Options:
        return None, self.state in _NUMBER_ENDS


# object stages
_O_OPEN, _O_KEY, _O_AFTER_KEY, _O_COLON, _O_VALUE, _O_COMMA = range(6)


@attrs.define
class ObjectFrame(Frame):
    node: Object
    depth: int
    stage: int = _O_OPEN
    gap: str = ""
    written: frozenset[str] = frozenset()
    last: int = -1  # index in node.properties of the latest key written
    key_text: str = ""  # the key being written, from its opening quote

    def feed(self, ch: str, m: Machine) -> int:
        stage, node = self.stage, self.node
        if ch in WS and stage not in (_O_KEY,):
            self.gap += ch
            return CONSUMED
        gap, self.gap = self.gap, ""
        if stage in (_O_OPEN, _O_COMMA) and ch == '"':
            m.style.learn("open" if stage == _O_OPEN else "comma", gap, self.depth)
            if node.free:
                self.stage = _O_AFTER_KEY
                m.stack.append(StringFrame())
            else:
                self.stage, self.key_text = _O_KEY, ch
            return CONSUMED
        if stage in (_O_OPEN, _O_VALUE) and ch == "}":
            return DONE if self._may_close() else REJECT
        if stage == _O_KEY:
            text = self.key_text + ch
            keys = [k for k in self._unwritten() if _quoted(k).startswith(text)]
            if not keys:
                return REJECT
            self.key_text = text
            done = next((k for k in keys if _quoted(k) == text), None)
            if done is not None:
                index = next(i for i, (k, _) in enumerate(node.properties) if k == done)
                self.stage, self.written, self.last = _O_AFTER_KEY, self.written | {done}, index
            return CONSUMED
        if stage == _O_AFTER_KEY and ch == ":":
            self.stage = _O_COLON
            return CONSUMED
        if stage == _O_COLON:
            m.style.learn("colon", gap, self.depth)
            self.stage = _O_VALUE
            return CONSUMED if m.open_value(self._value_node(), ch) else REJECT
        if stage == _O_VALUE and ch == "," and self._may_add():
            self.stage = _O_COMMA
            return CONSUMED
        return REJECT

    def options(self, m: Machine) -> Options:
        stage, style = self.stage, m.style
        if stage == _O_KEY:
            text = self.key_text
            keys = [_quoted(k) for k in self._in_order()]
            keys = [k for k in keys if k.startswith(text)] or [_quoted(k) for k in self._unwritten() if _quoted(k).startswith(text)]
            return frozenset(k[len(text)] for k in keys if len(k) > len(text)), False
        if stage == _O_AFTER_KEY:
            return frozenset(":"), False
        cands: list[str] = []
        if stage == _O_OPEN:
            if self._may_add():
                cands.append(style.after_open(self.depth) + '"')
            if self._may_close():
                cands.append("}")
        elif stage == _O_COMMA:
            cands.append(style.after_comma(self.depth) + '"')
        elif stage == _O_COLON:
            cands += [style.key_ws + c for c in start_chars(self._value_node())]
        else:
            # in schema order, another property comes if one is left before the next required
            # one (or a required one is still missing, written out of order)
            if self.node.free or self._in_order() or not self._may_close():
                cands.append(",")
            if self._may_close():
                cands.append(style.before_close(self.depth) + "}")
        return next_chars(cands, self.gap), False

    def _value_node(self) -> Node:
        if self.node.free:
            return self.node.values or AnyValue()
        return self.node.properties[self.last][1]

    def _unwritten(self) -> list[str]:
        return [k for k, _ in self.node.properties if k not in self.written]

    def _in_order(self) -> list[str]:
        """The keys that may come next if the model writes properties in schema order: the
        unwritten ones after the latest, up to and including the first required one."""
        out = []
        for key, _ in self.node.properties[self.last + 1 :]:
            if key in self.written:
                continue
            out.append(key)
            if key in self.node.required:
                break
        return out

    def _may_close(self) -> bool:
        return self.node.required <= self.written

    def _may_add(self) -> bool:
        return self.node.free or bool(self._unwritten())


# array stages
_A_OPEN, _A_VALUE, _A_COMMA = range(3)


@attrs.define
class ArrayFrame(Frame):
    node: Array
    depth: int
    stage: int = _A_OPEN
    gap: str = ""
    count: int = 0

    def feed(self, ch: str, m: Machine) -> int:
        stage, node = self.stage, self.node
        if ch in WS:
            self.gap += ch
            return CONSUMED
        gap, self.gap = self.gap, ""
        if ch == "]" and (stage == _A_OPEN and node.min_items == 0 or stage == _A_VALUE and self.count >= node.min_items):
            return DONE
        if stage == _A_VALUE:
            if ch == "," and self._may_add():
                self.stage = _A_COMMA
                return CONSUMED
            return REJECT
        if not self._may_add():
            return REJECT
        m.style.learn("open" if stage == _A_OPEN else "comma", gap, self.depth)
        self.stage, self.count = _A_VALUE, self.count + 1
        return CONSUMED if m.open_value(node.items, ch) else REJECT

    def options(self, m: Machine) -> Options:
        stage, style, node = self.stage, m.style, self.node
        cands: list[str] = []
        if stage == _A_VALUE:
            if self._may_add():
                cands.append(",")
            if self.count >= node.min_items:
                cands.append(style.before_close(self.depth) + "]")
        else:
            ws = style.after_open(self.depth) if stage == _A_OPEN else style.after_comma(self.depth)
            if self._may_add():
                cands += [ws + c for c in start_chars(node.items)]
            if stage == _A_OPEN and node.min_items == 0:
                cands.append("]")
        return next_chars(cands, self.gap), False

    def _may_add(self) -> bool:
        return self.node.max_items is None or self.count < self.node.max_items


@functools.lru_cache(maxsize=4096)
def _quoted(key: str) -> str:
    return json.dumps(key, ensure_ascii=False)
