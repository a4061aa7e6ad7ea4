"""REST-style retrieval proposer: draft what followed the request's recent tokens in a corpus.

The corpus is indexed once (index.py). Each step finds the longest suffix of the request's
tokens (prompt + output) that occurs in the corpus at least `min_occurrences` times, then
drafts the most frequent continuations across its occurrences (continuations.py): a tree of
the `budget` commonest trie nodes, as REST does, or with `chain=True` the single majority
path. The request's own text is not indexed — the n-gram and suffix proposers cover that;
this one brings text the request has never seen.

`Draft.score` is the expected number of accepted tokens if the model continued the way the
corpus does: the sum of the nodes' shares of the occurrences.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from spec_sdk.errors import ConfigError
from spec_sdk.proposers.base import RequestView
from spec_sdk.types import Draft

from spec_sdk_retrieval.continuations import top_continuations
from spec_sdk_retrieval.index import IndexStats, SuffixIndex
from spec_sdk_retrieval.sources import corpus_files, encode_all, load_tokenizer, read_texts


class RetrievalProposer:
    """Drafts continuations of the request's longest match in an indexed corpus.

    A corpus of files or texts is tokenized with `tokenizer` when given, else with the
    engine's (through `bind`), and indexed once per process for the same corpus and tokenizer.
    """

    name = "retrieval"
    needs_hidden_states = False

    def __init__(
        self,
        *,
        corpus: str | Path | Sequence[str | Path] = (),
        texts: Sequence[str] = (),
        token_ids: Sequence[Sequence[int]] = (),
        tokenizer: Any = None,
        glob: str = "**/*",
        min_match: int = 1,
        max_match: int = 16,
        min_occurrences: int = 1,
        max_occurrences: int = 256,
        chain: bool = False,
    ) -> None:
        for label, value in (("min_match", min_match), ("max_match", max_match),
                             ("min_occurrences", min_occurrences), ("max_occurrences", max_occurrences)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"retrieval {label} must be an int >= 1, got {value!r}")
        if min_match > max_match:
            raise ConfigError(f"retrieval min_match ({min_match}) must not exceed max_match ({max_match})")
        entries = (corpus,) if isinstance(corpus, (str, Path)) else tuple(corpus)
        if not entries and not texts and not token_ids:
            raise ConfigError("retrieval needs a corpus: corpus=[files, dirs, 'stdlib:<modules>'], texts=[...] or token_ids=[[...]]")
        self.min_match = min_match
        self.max_match = max_match
        self.min_occurrences = min_occurrences
        self.max_occurrences = max_occurrences
        self.chain = chain
        # resolved now, so a wrong path fails when the proposer is built, not at the first request
        self._files = tuple(corpus_files(entries, glob))
        self._texts = tuple(texts)
        self._ids = _ids_key(token_ids)
        self.index: SuffixIndex | None = None
        if tokenizer is not None or not (self._files or self._texts):
            self.index = _cached_index(self._files, self._texts, self._ids, _Key(tokenizer))

    def bind(self, target: Any, tokenizer: Any = None) -> None:
        """Index a text corpus with the engine's tokenizer (unless one was given), and refuse a
        corpus with token ids the target does not have."""
        if self.index is None:
            if tokenizer is None:
                raise ConfigError("retrieval: a text corpus needs a tokenizer; pass tokenizer= or give the engine one")
            self.index = _cached_index(self._files, self._texts, self._ids, _Key(tokenizer))
        vocab = getattr(target, "vocab_size", None)
        if vocab is not None and self.index.max_token >= int(vocab):
            raise ConfigError(f"the retrieval corpus has token id {self.index.max_token}, the target only {vocab} ids")

    def stats(self) -> IndexStats | None:
        """The index's size (documents, tokens, bytes held, seconds to build); None before it is built."""
        return None if self.index is None else self.index.stats()

    def start(self, req: RequestView) -> None:
        return None

    def propose(self, reqs: Sequence[RequestView], budgets: Sequence[int]) -> list[Draft | None]:
        if self.index is None:
            raise ConfigError("retrieval: the corpus is not indexed yet (no tokenizer was given and bind() was not called)")
        return [self._propose_one(self.index, req, budget) for req, budget in zip(reqs, budgets)]

    def observe(self, req: RequestView, accepted: Sequence[int], hidden: torch.Tensor | None) -> None:
        return None

    def finish(self, req: RequestView) -> None:
        return None

    def _propose_one(self, index: SuffixIndex, req: RequestView, budget: int) -> Draft | None:
        if budget <= 0:
            return None
        tokens = req.tokens
        recent = tokens[max(0, len(tokens) - self.max_match) :]
        match = index.longest_match(recent, self.max_match, self.max_occurrences, self.min_occurrences)
        if match is None or match.length < self.min_match:
            return None
        found = top_continuations(index.forward, match.starts, budget, self.chain)
        if not found.tokens:
            return None
        return Draft(
            tokens=found.tokens, parents=None if self.chain else found.parents,
            score=sum(found.shares), source=self.name,
        )


def _ids_key(token_ids: Sequence[Sequence[int]]) -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(int(t) for t in doc) for doc in token_ids)


class _Key:
    """A tokenizer as a cache key: a path by its text, an object by identity (and kept alive
    by the cache, so the identity stays valid)."""

    __slots__ = ("tokenizer",)

    def __init__(self, tokenizer: Any) -> None:
        self.tokenizer = str(tokenizer) if isinstance(tokenizer, Path) else tokenizer

    def __hash__(self) -> int:
        return hash(self.tokenizer) if isinstance(self.tokenizer, str) else id(self.tokenizer)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, _Key):
            return NotImplemented
        mine, theirs = self.tokenizer, other.tokenizer
        return mine == theirs if isinstance(mine, str) and isinstance(theirs, str) else mine is theirs


@functools.lru_cache(maxsize=4)
def _cached_index(
    files: tuple[Path, ...], texts: tuple[str, ...], token_ids: tuple[tuple[int, ...], ...], tokenizer: _Key
) -> SuffixIndex:
    docs: list[list[int]] = []
    if files or texts:
        docs = encode_all(load_tokenizer(tokenizer.tokenizer), [*read_texts(files), *texts])
    return SuffixIndex([*docs, *map(list, token_ids)])
