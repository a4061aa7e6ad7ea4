"""What a corpus can be built from, resolved to token-id documents.

A `corpus` entry is a file, a directory (its files matching `glob`, sorted; files that are
not UTF-8 text are skipped) or `stdlib:<mod>[,<mod>...]` — the source files of standard
library modules (a package contributes every .py file under it) — or `stdlib:*`, the whole
standard library's representative source (what the zoo models were trained on: no tests,
IDLE or data tables), so a bench or a test can name a real corpus without shipping one. Raw text and token ids come in their own options,
so a string is never guessed to be text or a path.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from spec_sdk.errors import ConfigError

STDLIB_PREFIX = "stdlib:"


def stdlib_module_files(modules: Sequence[str]) -> list[Path]:
    files: list[Path] = []
    for name in modules:
        spec = importlib.util.find_spec(name)
        if spec is None or spec.origin is None or not spec.origin.endswith(".py"):
            raise ConfigError(f"stdlib module {name!r} has no Python source")
        origin = Path(spec.origin)
        if spec.submodule_search_locations is not None:
            files += sorted(origin.parent.rglob("*.py"))
        else:
            files.append(origin)
    return files


def corpus_files(entries: Sequence[str | Path], glob: str) -> list[Path]:
    """Every file the `corpus` entries name, in the order given."""
    files: list[Path] = []
    for entry in entries:
        text = str(entry)
        if text.startswith(STDLIB_PREFIX):
            modules = [m.strip() for m in text[len(STDLIB_PREFIX) :].split(",") if m.strip()]
            if modules == ["*"]:
                from spec_sdk.zoo.data import stdlib_files

                files += [path for _, path in stdlib_files()]
            else:
                files += stdlib_module_files(modules)
            continue
        path = Path(entry)
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            files += sorted(p for p in path.glob(glob) if p.is_file())
        else:
            raise ConfigError(
                f"corpus entry {text!r} is not a file, a directory or {STDLIB_PREFIX}<modules>; "
                "pass raw text as texts=[...] and token ids as token_ids=[[...]]"
            )
    return files


def read_texts(files: Sequence[Path]) -> list[str]:
    texts = []
    for path in files:
        try:
            texts.append(path.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, OSError):
            continue
    return texts


def load_tokenizer(tokenizer: Any) -> Any:
    """An object with `encode(text, add_special_tokens=False)`; a path is loaded with transformers."""
    if not isinstance(tokenizer, (str, Path)):
        return tokenizer
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(tokenizer))


def encode_all(tokenizer: Any, texts: Sequence[str]) -> list[list[int]]:
    # without special tokens: a corpus document is text, not a whole prompt with its <s>
    return [[int(t) for t in tokenizer.encode(text, add_special_tokens=False)] for text in texts]
