"""Streamed text: incremental detokenisation and stop strings.

`IncrementalDetokenizer` turns token ids into text deltas whose concatenation equals
`tokenizer.decode(all_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)`.
Special tokens are skipped because a stream is read by people; clean-up is off because
it rewrites text across token boundaries, which no incremental stream can reproduce.

`StopMatcher` cuts a stream of text deltas before the first stop string to complete
(the stop string itself is not emitted, as in vLLM's default).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import tokenizers

from spec_sdk.errors import InvalidRequestError

_REPLACEMENT = "\ufffd"
# The window is cut only at a character boundary seen earlier, and only once that
# boundary is this many tokens in, so the extra decode a cut costs is amortised.
_CUT_AFTER_TOKENS = 8
# This many tokens without the decode ending on a whole character is invalid UTF-8, not a
# character in flight. Lossy UTF-8 decoding can still change only the last U+FFFD then.
_MAX_PENDING_TOKENS = 64
# Tokens kept when such a stream forces a cut: decoding resynchronises within 3 bytes of
# a cut, and the last U+FFFD stands for at most 4 byte tokens.
_FORCED_KEEP_TOKENS = 8


def _decoder(tokenizer: Any, skip_special_tokens: bool) -> Callable[[list[int]], str]:
    if isinstance(tokenizer, tokenizers.Tokenizer):
        return lambda ids: tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)
    return lambda ids: tokenizer.decode(
        ids, skip_special_tokens=skip_special_tokens, clean_up_tokenization_spaces=False
    )


def _special_ids(tokenizer: Any) -> frozenset[int]:
    """The ids that `decode(..., skip_special_tokens=True)` drops, where we can know them."""
    backend = tokenizer
    if not isinstance(backend, tokenizers.Tokenizer):
        backend = getattr(tokenizer, "backend_tokenizer", None)  # a transformers fast tokenizer
    if not isinstance(backend, tokenizers.Tokenizer):
        return frozenset()  # decode still skips them; we just cannot drop them earlier
    return frozenset(i for i, tok in backend.get_added_tokens_decoder().items() if tok.special)


class IncrementalDetokenizer:
    """Token ids in, text deltas out, never a partial multi-byte character.

    It decodes a window of the latest tokens that starts on a character boundary and
    remembers how many of the window's characters it emitted. Text up to the last
    character that is not U+FFFD is final, since later bytes cannot change a completed
    character, so it goes out at once; a trailing U+FFFD run waits for more bytes. The
    window starts with a few already-emitted tokens, because decoders such as
    SentencePiece's treat the first token of a text specially. Its length does not grow
    with the output, so neither does the cost of a push.

    Exact (the deltas join to the full decode) for byte-level BPE whatever the ids, and
    for byte-fallback tokenizers (Llama's SentencePiece) when the output is valid UTF-8.
    Works with a transformers tokenizer or a `tokenizers.Tokenizer`.
    """

    def __init__(self, tokenizer: Any, *, skip_special_tokens: bool = True) -> None:
        self._decode = _decoder(tokenizer, skip_special_tokens)
        # Skipped tokens never enter the window: one left at its start would make the next
        # token the first of the decoded text, and lose that token's leading space.
        self._skip = _special_ids(tokenizer) if skip_special_tokens else frozenset()
        self._window: list[int] = []
        self._emitted = 0  # characters of `decode(_window)` already emitted
        self._boundary = 0  # latest index of `_window` where its decode ended on a whole character

    def push(self, token_ids: Sequence[int]) -> str:
        """Add tokens; return the text that is now final."""
        ids = [int(t) for t in token_ids if int(t) not in self._skip]
        if not ids:
            return ""
        self._window.extend(ids)
        text = self._decode(self._window)
        end = len(text.rstrip(_REPLACEMENT))
        if end == len(text):
            return self._emit_whole(text)
        if len(self._window) - self._boundary > _MAX_PENDING_TOKENS:
            return self._emit_forced(text)
        # A byte-fallback run can turn invalid for a moment (end < emitted); what was
        # emitted from it comes back once it is whole again.
        delta = text[self._emitted : end]
        self._emitted = max(self._emitted, end)
        return delta

    def flush(self) -> str:
        """Release whatever is held back (at the end of the request)."""
        return self._emit_whole(self._decode(self._window)) if self._window else ""

    def _emit_whole(self, text: str) -> str:
        delta = text[self._emitted :]
        self._emitted = len(text)
        if self._boundary >= _CUT_AFTER_TOKENS:
            # Keep the tokens after the previous boundary as context for the next decode.
            self._window = self._window[self._boundary :]
            self._emitted = len(self._decode(self._window))
        self._boundary = len(self._window)
        return delta

    def _emit_forced(self, text: str) -> str:
        end = len(text) - 1
        delta = text[self._emitted : end]
        self._window = self._window[-_FORCED_KEEP_TOKENS:]
        self._emitted = max(0, len(self._decode(self._window)) - 1)
        self._boundary = 0
        return delta


class StopMatcher:
    """Cuts streamed text before the first stop string to complete (on a tie, the longer).

    `feed` holds back the longest tail that could still grow into a stop string, so the
    text it returns is final; `flush` releases that tail when the request ends for
    another reason. After a hit every later call returns nothing.
    """

    def __init__(self, stops: Sequence[str]) -> None:
        if isinstance(stops, str):
            stops = (stops,)
        if not all(isinstance(s, str) and s for s in stops):
            raise InvalidRequestError(f"stop strings must be non-empty strings, got {stops!r}")
        self._stops = tuple(dict.fromkeys(stops))
        self._longest = max((len(s) for s in self._stops), default=0)
        # Every proper prefix of a stop string: the tails worth holding back.
        self._prefixes = {s[:i] for s in self._stops for i in range(1, len(s))}
        self._held = ""
        self._hit = False

    @property
    def hit(self) -> bool:
        return self._hit

    def feed(self, delta: str) -> tuple[str, bool]:
        """Add text; return (text safe to emit now, whether a stop string was hit)."""
        if self._hit:
            return "", True
        text = self._held + delta
        # `_held` is the longest tail that is a proper prefix of a stop string, so every stop
        # that could end in this delta starts inside `text`, and none ended earlier. The stop that completes first
        # wins, as it would arriving one character at a time, so chunking cannot matter.
        found = [(i + len(s), i) for i, s in ((text.find(s), s) for s in self._stops) if i >= 0]
        if found:
            self._held = ""
            self._hit = True
            return text[: min(found)[1]], True
        keep = next(
            (n for n in range(min(len(text), self._longest - 1), 0, -1) if text[-n:] in self._prefixes),
            0,
        )
        self._held = text[len(text) - keep :]
        return text[: len(text) - keep], False

    def flush(self) -> str:
        """Release the held-back tail (the request ended for another reason)."""
        held, self._held = self._held, ""
        return held
