"""One request's state inside the engine: tokens, stop conditions, text, and its stream."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from spec_sdk.detok import IncrementalDetokenizer, StopMatcher
from spec_sdk.errors import InvalidRequestError
from spec_sdk.proposers.base import RequestView
from spec_sdk.types import FinishReason, SamplingParams, SpecStats, TokenChunk
from spec_sdk.verify.keyed import DRAFT_CONTEXT, DrawBook, Keyed, fresh_seed

_ids = itertools.count()


def new_request_id() -> str:
    return f"req-{next(_ids)}"


def validate_prompt(
    prompt: str | Sequence[int], tokenizer: Any, vocab_size: int, max_context: int
) -> list[int]:
    """Turn a prompt into token ids, or raise `InvalidRequestError` saying what is wrong."""
    if isinstance(prompt, str):
        if tokenizer is None:
            raise InvalidRequestError("a text prompt needs a tokenizer; pass token ids or give the engine one")
        ids = list(tokenizer.encode(prompt))
    else:
        try:
            ids = [int(t) for t in prompt]
        except (TypeError, ValueError) as exc:
            raise InvalidRequestError(f"prompt must be text or a sequence of token ids: {exc}") from None
        if any(isinstance(t, bool) or int(t) != t for t in prompt):
            raise InvalidRequestError("token ids must be integers")
    if not ids:
        raise InvalidRequestError("prompt is empty")
    bad = [t for t in ids if not 0 <= t < vocab_size]
    if bad:
        raise InvalidRequestError(f"token ids outside the vocabulary [0, {vocab_size}): {bad[:5]}")
    if len(ids) >= max_context:
        raise InvalidRequestError(
            f"prompt has {len(ids)} tokens; the model's context is {max_context}, leaving no room to generate"
        )
    return ids


class Request:
    """Mutable per-request state; touched by the step thread only between steps."""

    def __init__(
        self,
        request_id: str,
        prompt: list[int],
        params: SamplingParams,
        tokenizer: Any,
        eos_token_ids: Sequence[int],
        max_context: int,
    ) -> None:
        self.id = request_id
        self.tokens: list[int] = list(prompt)
        self.prompt_len = len(prompt)
        self.params = params
        self.stats = SpecStats()
        # sampling draws are keyed by seed and position: spec_sdk.verify.keyed
        self.book = DrawBook(params.seed if params.seed is not None else fresh_seed())
        self.view = RequestView(request_id, self.tokens, self.prompt_len, params, self.stats, self.book)
        self.max_len = min(max_context, self.prompt_len + params.max_new_tokens)
        self.stop_ids = frozenset(params.stop_token_ids) | (
            frozenset() if params.ignore_eos else frozenset(eos_token_ids)
        )
        self.detok = IncrementalDetokenizer(tokenizer) if tokenizer is not None else None
        self.stops = StopMatcher(params.stop) if params.stop else None
        if self.stops is not None and self.detok is None:
            raise InvalidRequestError("stop strings need a tokenizer")
        self.text_parts: list[str] = []
        self.finish_reason: FinishReason | None = None
        self.cancelled = False
        self.started = False  # prefilled in the backend

    @property
    def num_output(self) -> int:
        return len(self.tokens) - self.prompt_len

    def step_draws(self) -> Keyed:
        """This step's sampling draws: keyed from the position of its first new token."""
        self.book.passed(len(self.tokens))
        return Keyed(self.book, len(self.tokens), self.tokens[-DRAFT_CONTEXT:])

    def room(self) -> int:
        """Tokens this request may still emit."""
        return self.max_len - len(self.tokens)

    def append(self, tokens: Sequence[int], accepted: int) -> TokenChunk:
        """Take a verdict's tokens, apply stop conditions, and make this step's stream chunk."""
        kept: list[int] = []
        text: list[str] = []
        stop_string_hit = False
        for tok in tokens:
            kept.append(tok)
            self.tokens.append(tok)
            if self.detok is not None and tok not in self.stop_ids:
                delta = self.detok.push([tok])
                if self.stops is not None:
                    delta, hit = self.stops.feed(delta)
                    text.append(delta)
                    if hit:
                        self.finish_reason = "stop"
                        stop_string_hit = True
                        break
                else:
                    text.append(delta)
            if tok in self.stop_ids:
                self.finish_reason = "eos" if tok not in self.params.stop_token_ids else "stop"
                break
            if len(self.tokens) >= self.max_len:
                self.finish_reason = "length"
                break
        if self.finish_reason is not None and not stop_string_hit:
            # text held back for a possible stop string or a partial character is released
            text.append(self._flush_text())
        piece = "".join(text)
        self.text_parts.append(piece)
        return TokenChunk(
            request_id=self.id,
            token_ids=kept,
            text=piece,
            finish_reason=self.finish_reason,
            accepted=min(accepted, len(kept)),
        )

    def _flush_text(self) -> str:
        if self.detok is None:
            return ""
        tail = self.detok.flush()
        if self.stops is None:
            return tail
        delta, _ = self.stops.feed(tail)
        return delta + self.stops.flush()

    @property
    def text(self) -> str | None:
        return "".join(self.text_parts) if self.detok is not None else None
