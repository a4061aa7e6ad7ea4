"""JsonSchemaProposer: options, drafts along a generated document, engine binding, losslessness."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from spec_sdk.errors import ConfigError
from spec_sdk.proposers.base import Proposer, RequestView
from spec_sdk.proposers.registry import create
from spec_sdk.testing import check_lossless
from spec_sdk.types import SamplingParams, SpecStats

from spec_sdk_json_schema import JsonSchemaProposer

# The first characters are the ones the tiny vocabularies of check_lossless's targets get.
ALPHABET = '{"a: }b,[]0123456789cdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOP-.\n'
SCHEMA = {
    "type": "object",
    "properties": {"a": {"type": "string"}, "b": {"type": "array", "items": {"enum": ["x", "yy"]}}},
    "required": ["a", "b"],
}


class CharTokenizer:
    """One token per character: what the proposer needs of a tokenizer, on any vocabulary size."""

    def __init__(self, size: int = len(ALPHABET)) -> None:
        self.alphabet = ALPHABET[:size]

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [self.alphabet.index(c) for c in text]

    def decode(self, ids: list[int]) -> str:
        return "".join(self.alphabet[i] for i in ids)


TOK = CharTokenizer()


def view(prompt: list[int], output: list[int]) -> RequestView:
    return RequestView("r", prompt + output, len(prompt), SamplingParams(), SpecStats())


def test_registered_under_the_entry_point() -> None:
    proposer = create("json_schema", schema=SCHEMA, tokenizer=TOK)
    assert isinstance(proposer, JsonSchemaProposer) and isinstance(proposer, Proposer)


def test_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="needs schema"):
        JsonSchemaProposer()
    with pytest.raises(ConfigError):
        JsonSchemaProposer(schema=SCHEMA, separators=(";", ":"))
    with pytest.raises(ConfigError):
        JsonSchemaProposer(schema={"type": "date"})
    unbound = JsonSchemaProposer(schema=SCHEMA)
    with pytest.raises(ConfigError):
        unbound.propose([view([1], [])], [4])
    with pytest.raises(ConfigError):
        unbound.bind(object(), None)
    unbound.bind(object(), TOK)  # the engine's tokenizer
    assert unbound.propose([view([1], [])], [3])[0] is not None


def test_schema_from_json_text_or_file(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(json.dumps(SCHEMA))
    for schema in (json.dumps(SCHEMA), str(path), path):
        (draft,) = JsonSchemaProposer(schema=schema, tokenizer=TOK).propose([view([1], [])], [16])
        assert draft is not None and TOK.decode(list(draft.tokens)) == '{"a": "'[: len(draft.tokens)]


def test_drafts_follow_the_document_and_stop_where_the_model_chooses() -> None:
    doc = '{"a": "hi", "b": ["x", "yy"]}'
    proposer = JsonSchemaProposer(schema=SCHEMA, tokenizer=TOK)
    prompt = TOK.encode("ab")
    out = TOK.encode(doc)
    drafts: dict[int, str] = {}
    for i in range(len(out)):
        (draft,) = proposer.propose([view(prompt, out[:i])], [8])
        if draft is not None:
            text = TOK.decode(list(draft.tokens))
            assert doc.startswith(text, i) and draft.score == pytest.approx(0.9 * len(text))
            drafts[i] = text
    assert drafts[0] == '{"a": "'
    assert drafts[doc.index("hi") + 3] == ', "b": ['  # then '"' or ']' (the array may be empty)
    assert drafts[doc.index("yy") + 1] == 'y"'  # "y" decides the enum value; then "," or "]"
    assert doc.index("hi") + 1 not in drafts  # inside the string
    assert proposer.propose([view(prompt, out)], [8]) == [None]  # the document is complete
    assert proposer.propose([view(prompt, out)], [0]) == [None]


def test_no_drafts_once_the_output_leaves_the_schema() -> None:
    proposer = JsonSchemaProposer(schema=SCHEMA, tokenizer=TOK)
    assert proposer.propose([view([1], TOK.encode('{"c'))], [8]) == [None]
    assert proposer.propose([view([1], TOK.encode('{"c": '))], [8]) == [None]
    proposer.finish(view([1], []))
    assert proposer.propose([view([1], TOK.encode('{"a'))], [8])[0] is not None


def test_prefix_is_the_part_of_the_document_in_the_prompt() -> None:
    proposer = JsonSchemaProposer(schema=SCHEMA, tokenizer=TOK, prefix='{"a": "hi"')
    (draft,) = proposer.propose([view([1], [])], [16])
    assert draft is not None and TOK.decode(list(draft.tokens)) == ', "b": ['


def test_pretty_printing_style_option() -> None:
    proposer = JsonSchemaProposer(schema=SCHEMA, tokenizer=TOK, indent=2, separators=(",", ": "))
    (draft,) = proposer.propose([view([1], [])], [16])
    assert draft is not None and TOK.decode(list(draft.tokens)) == '{\n  "a": "'


def test_a_half_written_character_waits() -> None:
    class Utf8Tokenizer:
        def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
            return list(text.encode())

        def decode(self, ids: list[int]) -> str:
            return bytes(ids).decode(errors="replace")

    proposer = JsonSchemaProposer(schema={"type": "object", "properties": {"é": {"type": "null"}}, "required": ["é"]},
                                  tokenizer=Utf8Tokenizer())
    half = list('{"'.encode()) + list("é".encode())[:1]
    assert proposer.propose([view([1], half)], [8]) == [None]
    (draft,) = proposer.propose([view([1], list('{"é'.encode()))], [8])
    assert draft is not None and bytes(draft.tokens).decode() == '": null}'  # bytes never merge


def test_check_lossless() -> None:
    def make(target):  # type: ignore[no-untyped-def]
        schema = SCHEMA if target.vocab_size >= len(ALPHABET) else {
            "type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}
        return JsonSchemaProposer(schema=schema, tokenizer=CharTokenizer(target.vocab_size))

    report = check_lossless(make, greedy_examples=8, sampling_samples=1500)
    assert report.drafted > 0 and report.proposer_errors == 0
