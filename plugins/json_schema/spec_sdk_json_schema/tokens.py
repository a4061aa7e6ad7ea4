"""Forced text -> draft tokens, only where the tokenization is not in doubt.

A draft must continue the model's own tokens, and BPE merges across the point where the
output ends and the forced text begins, and again where the forced text ends and the model's
next choice begins. So: re-tokenize the output's tail together with the forced text; draft
only if that reproduces the model's own tail tokens, and keep only the draft tokens that stay
the same whatever character comes next — each character the schema allows there, or, where
it allows too many to try (inside a string, a number), one of each kind a pre-tokenizer
tells apart, plus JSON's punctuation.

The tail is re-tokenized from `window` tokens back rather than from the start, so a step's
cost does not grow with the output; a window that starts inside a merged pre-token shows up
as a mismatch with the model's tokens, and costs only that step's draft.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

# what may follow where the schema allows almost anything; whitespace may follow anywhere
OPEN_PROBES = ("a", "A", "0", '"', ",", ".", ":", "}", "]", "(", "-", "\\")
WHITESPACE = (" ", "\n")


def forced_tokens(
    tokenizer: Any, output_ids: Sequence[int], output_text: str, forced: str,
    after: Iterable[str] | None = None, window: int = 8,
) -> list[int]:
    """The tokens of `forced` that continue `output_ids`, given that one of the characters
    `after` (None: any) comes next."""
    split = max(0, len(output_ids) - window)
    head = decode(tokenizer, output_ids[:split]) if split else ""
    if not output_text.startswith(head):
        return []
    tail = output_text[len(head) :]
    own = [int(t) for t in output_ids[split:]]
    base = _encode(tokenizer, tail + forced)
    if base[: len(own)] != own:
        return []
    draft = base[len(own) :]
    probes = (*WHITESPACE, *(OPEN_PROBES if after is None else sorted(after)))
    for probe in probes:
        if not draft:
            break
        try:
            probed = _encode(tokenizer, tail + forced + probe)[len(own) :]
        except (KeyError, ValueError):
            continue  # a character the tokenizer cannot write cannot come next
        same = 0
        while same < len(draft) and same < len(probed) and probed[same] == draft[same]:
            same += 1
        draft = draft[:same]
    return draft


def _encode(tokenizer: Any, text: str) -> list[int]:
    # a transformers fast tokenizer's own wrapper costs ~10x its Rust core on short texts
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return list(backend.encode(text, add_special_tokens=False).ids)
    return [int(t) for t in tokenizer.encode(text, add_special_tokens=False)]


def decode(tokenizer: Any, ids: Sequence[int]) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is not None:
        return str(backend.decode(list(ids), skip_special_tokens=False))
    return str(tokenizer.decode(list(ids)))
