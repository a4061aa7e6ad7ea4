"""Incremental detokenisation and stop strings, against whole-text decoding."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

from spec_sdk.detok import IncrementalDetokenizer, StopMatcher
from spec_sdk.errors import InvalidRequestError

_LINES = [
    "The quick brown fox jumps over the lazy dog. def main(): return 42",
    "Café crème, naïve façade, smörgåsbord, jalapeño, Ærøskøbing, São Paulo.",
    "東京は日本の首都です。北京是中国的首都。서울은 한국의 수도입니다.",
    "Emoji: 😀 🎉 👍🏽 🇫🇷 👨‍👩‍👧 ❤️ 🚀 and more 🤖🧠.",
    "Ελληνικά, русский текст, العربية, עברית, हिन्दी, ไทย.",
    "for i in range(10):\n    print(i * 2)  # 数字 ✓\n",
]
_CORPUS = [line for _ in range(12) for line in _LINES]
_ALPHABET = "".join(sorted(set("".join(_LINES)))) + "abcxyz 🦀𝄞ß中"
SPECIALS = ["<eos>", "<pad>"]


def _train(kind: str) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    if kind == "bytelevel":
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        alphabet = pre_tokenizers.ByteLevel.alphabet()
    else:  # SentencePiece-like: "▁" marks spaces, unknown characters fall back to byte tokens
        tok.pre_tokenizer = pre_tokenizers.Metaspace()
        tok.decoder = decoders.Sequence(  # Llama's: the text's leading space is dropped
            [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
        )
        alphabet = []
    trainer = trainers.BpeTrainer(vocab_size=500, special_tokens=SPECIALS, initial_alphabet=alphabet)
    tok.train_from_iterator(_CORPUS, trainer)
    if kind == "bytelevel":
        return tok
    # byte-fallback tokens belong to the model's vocabulary, which the trainer cannot add
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    for b in range(256):
        vocab.setdefault(f"<0x{b:02X}>", len(vocab))
    spec["model"]["byte_fallback"] = True
    return Tokenizer.from_str(json.dumps(spec))


BYTELEVEL = _train("bytelevel")
HF = PreTrainedTokenizerFast(tokenizer_object=BYTELEVEL, eos_token="<eos>", pad_token="<pad>")
METASPACE = _train("metaspace")


def full_decode(tokenizer: Any, ids: Sequence[int]) -> str:
    if isinstance(tokenizer, Tokenizer):
        return tokenizer.decode(list(ids), skip_special_tokens=True)
    return tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)


def chunked(items: Sequence[Any], sizes: Sequence[int]) -> list[Sequence[Any]]:
    out, i = [], 0
    for size in sizes:
        if i >= len(items):
            break
        out.append(items[i : i + size])
        i += size
    if i < len(items):
        out.append(items[i:])
    return out


def stream(tokenizer: Any, ids: Sequence[int], sizes: Sequence[int]) -> list[str]:
    detok = IncrementalDetokenizer(tokenizer)
    deltas = [detok.push(chunk) for chunk in chunked(ids, sizes)]
    deltas.append(detok.flush())
    return deltas


texts = st.text(alphabet=st.one_of(st.sampled_from(_ALPHABET), st.characters(codec="utf-8")), max_size=60)
sizes = st.lists(st.integers(1, 5), max_size=40)


def test_fixture_has_partial_character_tokens() -> None:
    # the property tests mean something only if some tokens hold part of a character
    ids = HF.encode("😀🎉東京", add_special_tokens=False)
    assert any("\ufffd" in HF.decode([i]) for i in ids)


@settings(max_examples=max(150, settings.default.max_examples), deadline=None)
@given(texts, sizes)
def test_deltas_concatenate_to_full_decode(text: str, chunk_sizes: list[int]) -> None:
    ids = HF.encode(text, add_special_tokens=False)
    full = full_decode(HF, ids)
    assert full == text  # byte-level BPE round-trips any text
    deltas = stream(HF, ids, chunk_sizes)
    assert "".join(deltas) == full
    if "\ufffd" not in full:
        assert not any("\ufffd" in d for d in deltas)


@pytest.mark.parametrize("tokenizer", [HF, BYTELEVEL], ids=["transformers", "tokenizers"])
@settings(max_examples=max(100, settings.default.max_examples), deadline=None)
@given(data=st.data())
def test_any_ids_concatenate_to_full_decode(tokenizer: Any, data: st.DataObject) -> None:
    # arbitrary ids: special tokens and invalid UTF-8 included
    vocab = tokenizer.get_vocab_size() if isinstance(tokenizer, Tokenizer) else len(tokenizer)
    ids = data.draw(st.lists(st.integers(0, vocab - 1), max_size=60))
    chunk_sizes = data.draw(sizes)
    assert "".join(stream(tokenizer, ids, chunk_sizes)) == full_decode(tokenizer, ids)


_FALLBACK = {b: METASPACE.token_to_id(f"<0x{b:02X}>") for b in range(256)}
_NOT_FALLBACK = sorted(set(range(METASPACE.get_vocab_size())) - set(_FALLBACK.values()))


@settings(max_examples=max(100, settings.default.max_examples), deadline=None)
@given(data=st.data())
def test_byte_fallback_ids_concatenate_to_full_decode(data: st.DataObject) -> None:
    # any ids whose bytes are valid UTF-8: a byte-fallback run that turns invalid later
    # would change text already emitted, which no stream can take back
    pieces = st.one_of(
        st.sampled_from(_NOT_FALLBACK).map(lambda i: [i]),
        st.characters(codec="utf-8").map(lambda c: [_FALLBACK[b] for b in c.encode()]),
    )
    ids = [i for piece in data.draw(st.lists(pieces, max_size=30)) for i in piece]
    chunk_sizes = data.draw(sizes)
    full = full_decode(METASPACE, ids)
    deltas = stream(METASPACE, ids, chunk_sizes)
    assert "".join(deltas) == full
    if "\ufffd" not in full:
        assert not any("\ufffd" in d for d in deltas)


@settings(max_examples=max(100, settings.default.max_examples), deadline=None)
@given(texts, sizes)
def test_metaspace_spaces_survive_chunking(text: str, chunk_sizes: list[int]) -> None:
    ids = METASPACE.encode(text, add_special_tokens=False).ids
    assert "".join(stream(METASPACE, ids, chunk_sizes)) == full_decode(METASPACE, ids)


class CountingTokenizer:
    """Records how many ids each decode call sees."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.longest = 0

    def decode(self, ids: list[int], **kwargs: Any) -> str:
        self.longest = max(self.longest, len(ids))
        return str(self.inner.decode(ids, **kwargs))


@pytest.mark.parametrize("tokenizer", [HF, METASPACE], ids=["bytelevel", "metaspace"])
def test_special_tokens_between_words(tokenizer: Any) -> None:
    # a skipped special token must not become the "first token" of a later decode, where
    # SentencePiece-style decoders would drop the next word's space
    eos = tokenizer.token_to_id("<eos>") if isinstance(tokenizer, Tokenizer) else tokenizer.eos_token_id
    ids: list[int] = []
    for i, word in enumerate("the quick brown fox jumps over the lazy dog 東京 😀 again and again".split() * 3):
        encoded = tokenizer.encode(word, add_special_tokens=False)
        ids += (encoded.ids if isinstance(tokenizer, Tokenizer) else encoded) + [eos] * (i % 3)
    for size in (1, 2, 3):
        assert "".join(stream(tokenizer, ids, [size] * len(ids))) == full_decode(tokenizer, ids)


def test_push_cost_does_not_grow_with_output() -> None:
    counting = CountingTokenizer(HF)
    detok = IncrementalDetokenizer(counting)
    ids = HF.encode(" ".join(_CORPUS), add_special_tokens=False)
    assert len(ids) > 500
    out = "".join(detok.push([i]) for i in ids) + detok.flush()
    assert out == full_decode(HF, ids)
    assert counting.longest <= 24  # a few context tokens plus the ones still held back


def _byte_token_ids() -> list[int]:
    """Id of the single-byte token for each byte value (GPT-2's byte-to-character map)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    extra = iter(range(256, 512))
    chars = {b: chr(b) if b in printable else chr(next(extra)) for b in range(256)}
    vocab = BYTELEVEL.get_vocab()
    return [vocab[chars[b]] for b in range(256)]


BYTE_IDS = _byte_token_ids()


@pytest.mark.parametrize(
    ("text", "first", "chunk"),
    [
        ("ĀĂĄĆĈĊČĎĐĒ" * 6, 1, 2),
        ("龘靐齉" * 12, 2, 3),
        ("🦒🦓🦔🦕" * 8, 2, 4),
        ("🦒🦓🦔🦕" * 8, 3, 4),
    ],
    ids=["2-byte", "3-byte", "4-byte-a", "4-byte-b"],
)
def test_misaligned_chunks_over_a_long_stretch(text: str, first: int, chunk: int) -> None:
    # one token per byte, pushed so that every push ends partway through a character:
    # no whole-character end for 100+ tokens
    ids = [BYTE_IDS[b] for b in text.encode()]
    assert len(ids) > 100 and full_decode(HF, ids) == text
    counting = CountingTokenizer(HF)
    deltas = stream(counting, ids, [first] + [chunk] * len(ids))
    assert "".join(deltas) == full_decode(HF, ids)
    assert not any("\ufffd" in d for d in deltas)
    assert counting.longest <= 80


@pytest.mark.parametrize("chunk", [1, 2, 5])
def test_invalid_utf8_stream(chunk: int) -> None:
    # a long run of stray continuation bytes, then a character whose bytes arrive apart
    data = bytes([0x80] * 90) + "中".encode() + b"a" + bytes([0xE4, 0xB8]) + b"!" + bytes([0xF0])
    ids = [BYTE_IDS[b] for b in data]
    counting = CountingTokenizer(HF)
    assert "".join(stream(counting, ids, [chunk] * len(ids))) == full_decode(HF, ids)
    assert counting.longest <= 80


# --- stop strings -------------------------------------------------------------------

small_text = st.text(alphabet="ab c\n", max_size=40)
stop_lists = st.lists(st.text(alphabet="ab c\n", min_size=1, max_size=4), max_size=3)


def expected_cut(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """Generation stops at the first character that completes a stop string."""
    for end in range(1, len(text) + 1):
        done = [len(s) for s in stops if text[:end].endswith(s)]
        if done:
            return text[: end - max(done)], True
    return text, False


def run_stops(stops: Sequence[str], pieces: Sequence[str], check: Callable[[str, str], None]) -> tuple[str, bool]:
    matcher = StopMatcher(stops)
    out, fed, hit = "", "", False
    for piece in pieces:
        emitted, now_hit = matcher.feed(piece)
        assert not (hit and emitted)  # nothing after a hit
        out += emitted
        fed += piece
        hit = hit or now_hit
        check(out, fed)
    if not hit:
        out += matcher.flush()
    else:
        assert matcher.flush() == ""
    return out, hit


@settings(max_examples=max(200, settings.default.max_examples), deadline=None)
@given(small_text, stop_lists, sizes)
def test_stop_matcher_cuts_at_first_stop(text: str, stops: list[str], chunk_sizes: list[int]) -> None:
    longest = max((len(s) for s in stops), default=0)

    def check(out: str, fed: str) -> None:
        assert fed.startswith(out)
        want, hit = expected_cut(fed, stops)
        assert want.startswith(out)
        if not hit:
            assert len(fed) - len(out) < max(longest, 1)  # holds back less than a stop string

    pieces = [str(p) for p in chunked(text, chunk_sizes)]
    assert run_stops(stops, pieces, check) == expected_cut(text, stops)


def test_stop_matcher_examples() -> None:
    noop = lambda out, fed: None  # noqa: E731
    assert run_stops(["END"], ["hello E", "N", "D world"], noop) == ("hello ", True)
    assert run_stops(["END"], ["hello E", "NJOY"], noop) == ("hello ENJOY", False)
    assert run_stops(["ab", "b"], ["aab"], noop) == ("a", True)  # same end: the longer wins
    assert run_stops(["abcd", "c"], ["abcd"], noop) == ("ab", True)  # the first to complete wins
    assert run_stops([], ["anything"], noop) == ("anything", False)
    matcher = StopMatcher(["\n\n"])
    assert matcher.feed("line\n") == ("line", False)
    assert matcher.flush() == "\n"


def test_empty_stop_string_rejected() -> None:
    with pytest.raises(InvalidRequestError):
        StopMatcher(["ok", ""])
