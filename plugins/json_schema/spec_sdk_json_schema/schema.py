"""The JSON schema subset the proposer understands, compiled to a few node types.

Supported: `type` (object, array, string, number, integer, boolean, null, or a list of
them), `properties` + `required` (an object with properties holds only those, in schema
order), `additionalProperties` (an object without `properties`: any keys, values of that
schema), `items`, `minItems`, `maxItems`, `enum`, `const`, `anyOf` / `oneOf` (when the
options start with different characters, e.g. `Optional[...]`), and `$ref` into `$defs` /
`definitions`. Anything else is ignored: the schema then admits more than it says, so the
proposer forces less, never more.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import attrs

from spec_sdk.errors import ConfigError

NUMBER_START = frozenset("-0123456789")


@attrs.frozen
class AnyValue:
    pass


@attrs.frozen
class Literal:
    """A closed set of values (enum, const, boolean, null), as their compact JSON texts."""

    texts: tuple[str, ...]


@attrs.frozen
class String:
    pass


@attrs.frozen
class Number:
    integer: bool = False


@attrs.frozen
class Object:
    """`properties` in schema order; `values` is the schema of any key when there are none."""

    properties: tuple[tuple[str, Node], ...] = ()
    required: frozenset[str] = frozenset()
    values: Node | None = None

    @property
    def free(self) -> bool:
        return not self.properties


@attrs.frozen
class Array:
    items: Node
    min_items: int = 0
    max_items: int | None = None


@attrs.frozen
class Choice:
    """anyOf / oneOf / a type list: options told apart by their first character."""

    options: tuple[Node, ...]


Node = AnyValue | Literal | String | Number | Object | Array | Choice


def start_chars(node: Node) -> frozenset[str]:
    """The characters a value of `node` can begin with."""
    if isinstance(node, Literal):
        return frozenset(t[0] for t in node.texts)
    if isinstance(node, String):
        return frozenset('"')
    if isinstance(node, Number):
        return NUMBER_START
    if isinstance(node, Object):
        return frozenset("{")
    if isinstance(node, Array):
        return frozenset("[")
    if isinstance(node, Choice):
        return frozenset().union(*(start_chars(o) for o in node.options))
    return NUMBER_START | frozenset('"{[tfn')


def compile_schema(schema: Mapping[str, Any] | bool) -> Node:
    return _Compiler(schema if isinstance(schema, Mapping) else {}).node(schema)


class _Compiler:
    def __init__(self, root: Mapping[str, Any]) -> None:
        self.root = root
        self.resolving: set[str] = set()

    def node(self, schema: Any) -> Node:
        if schema is True or schema == {}:
            return AnyValue()
        if not isinstance(schema, Mapping):
            raise ConfigError(f"a JSON schema must be an object or true, got {schema!r}")
        if "$ref" in schema:
            return self.ref(str(schema["$ref"]))
        if "const" in schema:
            return Literal((_compact(schema["const"]),))
        if "enum" in schema:
            values = schema["enum"]
            if not isinstance(values, list) or not values:
                raise ConfigError(f"enum must be a non-empty list, got {values!r}")
            return Literal(tuple(dict.fromkeys(_compact(v) for v in values)))
        for key in ("anyOf", "oneOf"):
            if key in schema:
                return self.union([self.node(s) for s in schema[key]])
        kind = schema.get("type")
        if isinstance(kind, list):
            return self.union([self.typed({**schema, "type": k}) for k in kind])
        if kind is None:
            # untyped but shaped: infer the type the keywords belong to
            if "properties" in schema or "additionalProperties" in schema:
                kind = "object"
            elif "items" in schema:
                kind = "array"
            else:
                return AnyValue()
        return self.typed({**schema, "type": kind})

    def typed(self, schema: Mapping[str, Any]) -> Node:
        kind = schema["type"]
        if kind == "string":
            return String()
        if kind in ("number", "integer"):
            return Number(integer=kind == "integer")
        if kind == "boolean":
            return Literal(("true", "false"))
        if kind == "null":
            return Literal(("null",))
        if kind == "array":
            items = schema.get("items", True)
            max_items = schema.get("maxItems")
            return Array(self.node(items), int(schema.get("minItems", 0)), None if max_items is None else int(max_items))
        if kind == "object":
            props = schema.get("properties") or {}
            if props:
                required = frozenset(str(k) for k in schema.get("required", ()))
                return Object(tuple((str(k), self.node(v)) for k, v in props.items()), required)
            extra = schema.get("additionalProperties", True)
            return Object(values=self.node(extra if extra is not False else True))
        raise ConfigError(f"unsupported JSON schema type {kind!r}")

    def union(self, options: list[Node]) -> Node:
        flat: list[Node] = []
        for option in options:
            flat += option.options if isinstance(option, Choice) else [option]
        starts = [start_chars(o) for o in flat]
        seen: set[str] = set()
        for chars in starts:
            if chars & seen:
                # two options start alike: telling them apart needs lookahead we do not do
                return AnyValue()
            seen |= chars
        return flat[0] if len(flat) == 1 else Choice(tuple(flat))

    def ref(self, ref: str) -> Node:
        if not ref.startswith("#/"):
            raise ConfigError(f"only local $refs (#/...) are supported, got {ref!r}")
        if ref in self.resolving:
            return AnyValue()  # a recursive schema: stop forcing at the recursion
        target: Any = self.root
        for part in ref[2:].split("/"):
            if not isinstance(target, Mapping) or part not in target:
                raise ConfigError(f"$ref {ref!r} points nowhere")
            target = target[part]
        self.resolving.add(ref)
        try:
            return self.node(target)
        finally:
            self.resolving.discard(ref)


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
