"""forced_tokens with a real BPE tokenizer (the zoo's): drafts only tokens the model's own
tokenization of the document would have."""

from __future__ import annotations

import functools
import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from spec_sdk_json_schema.machine import Machine
from spec_sdk_json_schema.schema import compile_schema
from spec_sdk_json_schema.tokens import decode, forced_tokens

SCHEMA = {
    "type": "object",
    "properties": {
        "title": {"type": "string"},
        "year": {"type": "integer"},
        "genre": {"enum": ["drama", "comedy", "documentary"]},
        "rating": {"type": "number"},
        "seen": {"type": "boolean"},
        "cast": {"type": "array", "items": {"type": "object", "properties": {"name": {"type": "string"}, "role": {"type": "string"}}, "required": ["name", "role"]}},
    },
    "required": ["title", "year", "genre", "seen", "cast"],
}
TEXT = st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=12)
MOVIES = st.tuples(
    TEXT, st.integers(1900, 2030), st.sampled_from(["drama", "comedy", "documentary"]), st.none() | st.floats(0, 10),
    st.booleans(), st.lists(st.tuples(TEXT, TEXT), max_size=2),
).map(lambda t: {"title": t[0], "year": t[1], "genre": t[2], **({} if t[3] is None else {"rating": t[3]}),
                 "seen": t[4], "cast": [{"name": n, "role": r} for n, r in t[5]]})


@functools.lru_cache(maxsize=1)
def zoo_tokenizer() -> Any:
    from transformers import AutoTokenizer

    from spec_sdk.zoo.build import default_model_dir

    return AutoTokenizer.from_pretrained(str(default_model_dir()))


@settings(max_examples=25, deadline=None, derandomize=True)
@given(movie=MOVIES)
def test_drafts_are_a_prefix_of_the_real_tokens(movie: dict) -> None:
    tok = zoo_tokenizer()
    out = tok.encode(json.dumps(movie), add_special_tokens=False)
    node = compile_schema(SCHEMA)
    drafted = 0
    for i in range(len(out)):
        text = decode(tok, out[:i])
        m = Machine(node)
        assert m.feed(text)
        draft = forced_tokens(tok, out[:i], text, *m.forced_and_next())
        assert out[i : i + len(draft)] == draft, (text, [decode(tok, [t]) for t in draft])
        drafted += len(draft)
    assert drafted > 0


def test_the_boundaries_with_the_model_tokens_are_respected() -> None:
    tok = zoo_tokenizer()
    whole = tok.encode('{"title": "Up", "year": 1999', add_special_tokens=False)
    # the tokenizer writes '",' as one token, so the model's output ends after it
    out = tok.encode('{"title": "Up",', add_special_tokens=False)
    assert whole[: len(out)] == out
    draft = forced_tokens(tok, out, '{"title": "Up",', ' "year": ', frozenset("0123456789-"))
    assert whole[len(out) : len(out) + len(draft)] == draft
    assert decode(tok, draft) == ' "year":'  # the space may join the number: not drafted
    # a '"' token of its own is not how the tokenizer ends '"Up", ...': where the forced
    # text's tokens would start is unknown, so no draft
    cut = tok.encode('{"title": "Up"', add_special_tokens=False)
    assert forced_tokens(tok, cut, '{"title": "Up"', ', "year": ', frozenset("0123456789-")) == []
    odd = [t for ch in '{"title": "Up",' for t in tok.encode(ch, add_special_tokens=False)]
    assert forced_tokens(tok, odd, '{"title": "Up",', ' "year": ', None, window=64) == []
