"""The schema compiler and the JSON prefix machine: what it forces, what it accepts, what it refuses."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spec_sdk.errors import ConfigError
from spec_sdk_json_schema.machine import Machine, Style
from spec_sdk_json_schema.schema import AnyValue, Choice, Literal, Object, compile_schema

PERSON = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "color": {"enum": ["red", "green", "blue"]},
        "ok": {"type": "boolean"},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
        "address": {"$ref": "#/$defs/address"},
        "nick": {"anyOf": [{"type": "string"}, {"type": "null"}]},
        "kind": {"const": "person"},
        "score": {"type": "number"},
    },
    "required": ["name", "age", "color", "ok", "tags", "address", "kind"],
    "$defs": {
        "address": {
            "type": "object",
            "properties": {"street": {"type": "string"}, "zip": {"type": "string"}},
            "required": ["street", "zip"],
        }
    },
}


def forced(schema: Any, prefix: str, style: Style | None = None) -> str | None:
    m = Machine(compile_schema(schema), style)
    return m.forced() if m.feed(prefix) else None


@pytest.mark.parametrize(
    ("prefix", "expected"),
    [
        ("", '{"name": "'),
        ("  ", '{"name": "'),  # leading whitespace is allowed and not forced
        ("{", '"name": "'),
        ('{"n', 'ame": "'),
        ('{"name": "Bo', ""),  # string content: the model's choice
        ('{"name": "Bob"', ', "age": '),
        ('{"name": "Bob", "age": 4', ""),  # a number may go on
        ('{"name": "Bob", "age": 42,', ' "color": "'),
        ('{"name": "Bob", "age": 42, "color": "', ""),  # three enum values
        ('{"name": "Bob", "age": 42, "color": "g', 'reen", "ok": '),
        ('{"name": "Bob", "age": 42, "color": "red", "ok": f', 'alse, "tags": ['),
        ('{"name": "B", "age": 1, "color": "red", "ok": true, "tags": ["a", "b", "c"', '], "address": {"street": "'),
        ('{"name": "B", "age": 1, "color": "red", "ok": true, "tags": [], "address": {"street": "x"', ', "zip": "'),
        # "nick" is optional, "kind" required: the next key is one of two
        ('{"name": "B", "age": 1, "color": "red", "ok": true, "tags": [], "address": {"street": "x", "zip": "y"}', ', "'),
        ('{"name": "B", "age": 1, "color": "red", "ok": true, "tags": [], "address": {"street": "x", "zip": "y"}, "n',
         'ick": '),
        ('{"name": "B", "age": 1, "color": "red", "ok": true, "tags": [], "address": {"street": "x", "zip": "y"}, '
         '"nick": n', 'ull, "kind": "person"'),
        # after the last required property only the optional "score" or the end may come
        ('{"name": "B", "age": 1, "color": "red", "ok": true, "tags": [], "address": {"street": "x", "zip": "y"}, '
         '"kind": "person"', ""),
    ],
)
def test_forced_text(prefix: str, expected: str) -> None:
    assert forced(PERSON, prefix) == expected


def test_style_is_learned_from_the_output() -> None:
    # the whitespace after a comma is known once the model writes the next key
    assert forced(PERSON, '{"name":"Bob",') == ' "age":'
    assert forced(PERSON, '{"name":"Bob","age":1,') == '"color":"'
    assert forced(PERSON, '{\n  "name": "Bob",') == '\n  "age": '
    assert forced(PERSON, '{\n    "name": "Bob"') == ',\n    "age": '
    deep = '{\n  "name": "B",\n  "age": 1,\n  "color": "red",\n  "ok": true,\n  "tags": [],\n  "address": {\n    "street": "x"'
    assert forced(PERSON, deep) == ',\n    "zip": "'
    assert forced(PERSON, deep + ',\n    "zip": "y"') == '\n  },\n  "'  # then "nick" or "kind"
    assert forced(PERSON, "", Style(item_ws="", key_ws="", indent=None)) == '{"name":"'


def test_arrays_bounds_and_closing() -> None:
    pair = {"type": "array", "items": {"type": "integer"}, "minItems": 2, "maxItems": 2}
    assert forced(pair, "") == "["
    assert forced(pair, "[1") == ""  # the number may go on
    assert forced(pair, "[1,") == " "
    assert forced(pair, "[1, 2") == ""
    assert forced(pair, "[1, 2 ") == "]"
    objs = {"type": "array", "items": {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]}}
    assert forced(objs, "[") == ""  # an element or the end
    assert forced(objs, "[{") == '"id": '
    assert forced(objs, '[{"id": 1}, ') == '{"id": '


def test_literals_with_a_common_prefix_wait_for_the_model() -> None:
    schema = {"enum": ["ab", "abc", 1, 12, None]}
    assert forced(schema, '"a') == 'b'
    assert forced(schema, '"ab') == ""  # '"' or 'c'
    assert forced(schema, "1") == ""  # done, or "12"
    assert forced(schema, "n") == "ull"
    assert forced({"const": {"a": [1, 2]}}, "") == '{"a":[1,2]}'


@pytest.mark.parametrize(
    ("schema", "text"),
    [
        (PERSON, '{"name": 1'),  # a number where a string goes
        (PERSON, '{"nope"'),  # a property the schema does not have
        (PERSON, '{"name": "a", "age": 1.5'),  # not an integer
        (PERSON, '{"name": "a"}'),  # required properties missing
        ({"type": "array", "maxItems": 1}, "[1, 2"),
        ({"type": "boolean"}, "tru e"),
        ({"type": "string"}, '"a"x'),  # text after the document
        ({"type": "string"}, '"\\q'),  # a bad escape
        ({"type": "number"}, "01"),  # a leading zero
        ({"enum": ["a", "b"]}, '"c'),
    ],
)
def test_text_that_leaves_the_schema_fails(schema: Any, text: str) -> None:
    m = Machine(compile_schema(schema))
    assert not m.feed(text) and m.failed and m.forced() == ""


def test_properties_out_of_order_are_accepted() -> None:
    m = Machine(compile_schema(PERSON))
    assert m.feed('{"age": 3, "name": "x"')
    assert m.forced() == ', "color": "'  # schema order resumes after the latest key
    assert m.feed(', "color": "red", "ok": true, "tags": [], "address": {"street": "", "zip": ""}, "kind": "person"}')
    assert m.complete


def test_compiler_subset() -> None:
    assert compile_schema(True) == AnyValue() and compile_schema({}) == AnyValue()
    assert compile_schema({"type": "null"}) == Literal(("null",))
    assert isinstance(compile_schema({"type": ["string", "null"]}), Choice)
    # options that start alike cannot be told apart by one character: any value
    assert compile_schema({"anyOf": [{"type": "object"}, {"type": "object", "properties": {"a": {}}}]}) == AnyValue()
    free = compile_schema({"type": "object", "additionalProperties": {"type": "integer"}})
    assert isinstance(free, Object) and free.free
    recursive = {"$defs": {"n": {"type": "array", "items": {"$ref": "#/$defs/n"}}}, "$ref": "#/$defs/n"}
    assert forced(recursive, "[[") == ""
    for bad in ({"type": "date"}, {"$ref": "http://x"}, {"$ref": "#/nowhere"}, {"enum": []}, 3):
        with pytest.raises(ConfigError):
            compile_schema(bad)  # type: ignore[arg-type]


# -- property: in the style it expects, the forced text is always what comes next -------------

ADDRESS = st.tuples(st.text(max_size=6), st.from_regex(r"[0-9]{2}", fullmatch=True)).map(lambda t: {"street": t[0], "zip": t[1]})
PEOPLE = st.fixed_dictionaries(
    {
        "name": st.text(max_size=8),
        "age": st.integers(-5, 10**6),
        "color": st.sampled_from(["red", "green", "blue"]),
        "ok": st.booleans(),
        "tags": st.lists(st.text(max_size=3), max_size=3),
        "address": ADDRESS,
    },
    optional={"nick": st.one_of(st.none(), st.text(max_size=3))},
).map(lambda d: {**{k: d[k] for k in ("name", "age", "color", "ok", "tags", "address") }, **({"nick": d["nick"]} if "nick" in d else {}), "kind": "person"})


@settings(max_examples=60, deadline=None, derandomize=True)
@given(value=PEOPLE, fmt=st.sampled_from(["default", "compact", "pretty"]), score=st.none() | st.floats(-1e3, 1e3))
def test_forced_text_is_what_follows(value: dict, fmt: str, score: float | None) -> None:
    if score is not None:
        value["score"] = score
    kwargs = {"default": {}, "compact": {"separators": (",", ":")}, "pretty": {"indent": 2}}[fmt]
    doc = json.dumps(value, **kwargs)
    m = Machine(compile_schema(PERSON))
    assert m.feed(doc) and m.complete
    # until the model has shown its whitespace the style is a guess; after, it must be exact
    after_comma = doc.index(",") + 1
    known = 0 if fmt == "default" else after_comma + len(doc[after_comma:]) - len(doc[after_comma:].lstrip()) + 1
    m = Machine(compile_schema(PERSON))
    m.feed(doc[:known])
    for i in range(known, len(doc)):
        text = m.forced()
        assert doc.startswith(text, i), (doc[:i], text)
        m.feed(doc[i])
