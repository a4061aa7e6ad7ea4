"""Structured-output proposer: drafts the tokens a JSON schema makes certain.

The request's output is taken to be one JSON document (after `prefix`, the part of it the
prompt already holds). Each step feeds the newly decoded output text to the request's parser
(machine.py), asks it what text the schema forces next — keys, punctuation, the rest of an
enum value or a const, `true` after `t` — and drafts that text's tokens (tokens.py). Where
the model has a choice (a string's content, a number, which of several enum values, whether
an optional property comes) it drafts nothing. Once the output leaves the schema, the
request gets no more drafts.

`Draft.score` is the draft's length times a fixed trust: a model asked for JSON in this
schema writes the forced text almost always, and the score should beat a retrieval or n-gram
guess of the same length.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from spec_sdk.errors import ConfigError
from spec_sdk.proposers.base import RequestView
from spec_sdk.types import Draft

from spec_sdk_json_schema.machine import Machine, Style
from spec_sdk_json_schema.schema import Node, compile_schema
from spec_sdk_json_schema.tokens import decode, forced_tokens

TRUST = 0.9


class _Req:
    __slots__ = ("machine", "fed")

    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.fed = ""  # the output text the machine has consumed


class JsonSchemaProposer:
    """Drafts what a JSON schema forces, given the output so far."""

    name = "json_schema"
    needs_hidden_states = False

    def __init__(
        self,
        *,
        schema: Mapping[str, Any] | bool | str | Path | None = None,
        tokenizer: Any = None,
        prefix: str = "",
        separators: tuple[str, str] = (", ", ": "),
        indent: int | None = None,
        window: int = 8,
        max_chars: int = 256,
    ) -> None:
        if schema is None:
            raise ConfigError("json_schema needs schema=: a dict, a JSON string or the path of a .json file")
        if len(separators) != 2 or any(s.strip(",: \t\n\r") for s in separators):
            raise ConfigError(f"separators must be (item, key) like json.dumps', got {separators!r}")
        self.node: Node = compile_schema(_load_schema(schema))
        # None: the engine's, given to `bind`
        self.tokenizer = None if tokenizer is None else _load_tokenizer(tokenizer)
        self.prefix = prefix
        self.style = Style(item_ws=separators[0].lstrip(","), key_ws=separators[1].lstrip(":"), indent=indent)
        self.window = window
        self.max_chars = max_chars
        self._reqs: dict[str, _Req] = {}

    def bind(self, target: Any, tokenizer: Any = None) -> None:
        if self.tokenizer is None:
            if tokenizer is None:
                raise ConfigError("json_schema needs a tokenizer: pass tokenizer= or give the engine one")
            self.tokenizer = tokenizer

    def start(self, req: RequestView) -> None:
        self._reqs[req.id] = self._fresh()

    def propose(self, reqs: Sequence[RequestView], budgets: Sequence[int]) -> list[Draft | None]:
        return [self._propose_one(req, budget) for req, budget in zip(reqs, budgets)]

    def observe(self, req: RequestView, accepted: Sequence[int], hidden: torch.Tensor | None) -> None:
        return None  # `propose` reads the output from `req.tokens`

    def finish(self, req: RequestView) -> None:
        self._reqs.pop(req.id, None)

    def _fresh(self) -> _Req:
        machine = Machine(self.node, Style(self.style.item_ws, self.style.key_ws, self.style.indent))
        machine.feed(self.prefix)
        return _Req(machine)

    def _propose_one(self, req: RequestView, budget: int) -> Draft | None:
        if budget <= 0:
            return None
        if self.tokenizer is None:
            raise ConfigError("json_schema has no tokenizer (none given and bind() was not called)")
        output = req.tokens[req.prompt_len :]
        text = decode(self.tokenizer, output) if output else ""
        # a trailing U+FFFD is a character whose bytes have not all been generated yet
        settled = text.rstrip("\ufffd")
        state = self._reqs.get(req.id)
        if state is None or not settled.startswith(state.fed):
            state = self._reqs[req.id] = self._fresh()
        state.machine.feed(settled[len(state.fed) :])
        state.fed = settled
        if state.machine.failed or settled != text:
            return None
        forced, after = state.machine.forced_and_next(self.max_chars)
        if not forced:
            return None
        draft = forced_tokens(self.tokenizer, output, text, forced, after, self.window)[:budget]
        if not draft:
            return None
        return Draft(tokens=draft, score=TRUST * len(draft), source=self.name)


def _load_schema(schema: Mapping[str, Any] | bool | str | Path) -> Mapping[str, Any] | bool:
    if isinstance(schema, Path) or isinstance(schema, str) and not schema.lstrip().startswith(("{", "true", "false")):
        return json.loads(Path(schema).read_text())  # type: ignore[no-any-return]
    if isinstance(schema, str):
        return json.loads(schema)  # type: ignore[no-any-return]
    return schema


def _load_tokenizer(tokenizer: Any) -> Any:
    """An object with `encode(text, add_special_tokens=False)` and `decode(ids)`; a path is
    loaded with transformers."""
    if not isinstance(tokenizer, (str, Path)):
        return tokenizer
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer))
