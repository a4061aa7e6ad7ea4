"""Prompt lookup: propose what followed the last time the request's own suffix appeared.

The index is incremental: per request and per n-gram length `n`, a dict from n-gram to
the position where its continuation starts. Each call first indexes only the tokens
added since the previous call, then looks up the request's suffix, longest `n` first.
A step therefore costs O((new tokens) * (max_n - min_n + 1) + budget) dict and list
operations, whatever the length of the context.

Which earlier occurrence to copy from (`choice`):
- "first": the leftmost occurrence (what Hugging Face prompt lookup does);
- "last": the most recent occurrence;
- "frequent": the continuation token seen most often after this n-gram (ties go to
  the one seen most recently), copied from its most recent occurrence.

An occurrence's continuation may run into the suffix itself (e.g. `a b a b` matching
`a b` at 0): the draft is then copied forward from itself, LZ77-style, which extends a
periodic pattern instead of stopping short.

Why "frequent" is the default -- benchmarks/ngram_choice.py: simulated greedy decoding of
60 Python stdlib files (min_n=1, max_n=4; a draft is accepted up to its first wrong
token; the step advances by accepted + 1). Draft tokens accepted per proposal, and the
cost of `propose` per step (shared 2-core CPU, so microseconds are rough):

    tokens            k   first   last   frequent   us/step first / last / frequent
    words  (248k)     4   0.727   0.818   0.863     13 / 13 / 17
                      8   0.797   0.910   0.960     13 / 14 / 17
    bytes  (353k)     4   0.959   1.197   1.219     11 / 11 / 16
                      8   1.183   1.487   1.512     12 / 13 / 18

Recent text predicts better than old ("last" beats "first" by 14-26%), and the majority
continuation beats the single latest one by 2-5% more, for about 4 us a step -- well
under 1% of a target forward. Over one 248k-token request the cost per step stays flat
(17-20 us from the first quarter of the context to the last). The index holds about
120 bytes per context token for "first"/"last" and 260 for "frequent" (word tokens).

The score is a prior over (match length, budget), fitted to "frequent" on the same runs;
its mean matches the mean accepted within 7% there (k=8, words: 1.02 vs 0.96; bytes:
1.43 vs 1.51), and it overestimates "first" by about a third.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from spec_sdk.errors import ConfigError
from spec_sdk.proposers.base import RequestView
from spec_sdk.types import Draft

CHOICES = ("first", "last", "frequent")

# The score's prior, fitted on benchmarks/ngram_choice.py (stdlib source, word and byte
# tokens): after a match of length n (index n-1; longer matches use the last entry) the
# first token is accepted with probability p1, and each later one, given the one before
# it was, with probability q -- the first token is the hard one.
_ACCEPT_BY_MATCH = ((0.23, 0.56), (0.45, 0.56), (0.5, 0.66), (0.7, 0.8))


class _Index:
    """The n-gram index of one request."""

    __slots__ = ("grams", "pairs", "best", "next_end")

    def __init__(self, min_n: int, max_n: int) -> None:
        # grams[n]: n-gram -> the position its chosen continuation starts at.
        self.grams: dict[int, dict[tuple[int, ...], int]] = {n: {} for n in range(min_n, max_n + 1)}
        # Only for "frequent", and only for n-grams seen twice or more: (n-gram + next
        # token) -> count, and n-gram -> the count of its most frequent next token.
        self.pairs: dict[tuple[int, ...], int] = {}
        self.best: dict[tuple[int, ...], int] = {}
        # The next n-gram end position to index. An n-gram is indexed only once the token
        # after it exists, so the request's current suffix is never matched with itself.
        self.next_end = 0


class NgramProposer:
    """Prompt-lookup proposer over the request's own tokens (prompt + output)."""

    name = "ngram"
    needs_hidden_states = False

    def __init__(self, *, min_n: int = 1, max_n: int = 4, choice: str = "frequent") -> None:
        for label, value in (("min_n", min_n), ("max_n", max_n)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"ngram {label} must be an int >= 1, got {value!r}")
        if min_n > max_n:
            raise ConfigError(f"ngram min_n ({min_n}) must not exceed max_n ({max_n})")
        if choice not in CHOICES:
            raise ConfigError(f"ngram choice must be one of {', '.join(CHOICES)}; got {choice!r}")
        self.min_n = min_n
        self.max_n = max_n
        self.choice = choice
        self._indexes: dict[str, _Index] = {}

    def start(self, req: RequestView) -> None:
        self._indexes[req.id] = index = _Index(self.min_n, self.max_n)
        self._catch_up(index, req.tokens)

    def propose(self, reqs: Sequence[RequestView], budgets: Sequence[int]) -> list[Draft | None]:
        return [self._propose_one(req, budget) for req, budget in zip(reqs, budgets)]

    def observe(self, req: RequestView, accepted: Sequence[int], hidden: torch.Tensor | None) -> None:
        # Nothing to do: `propose` catches up from `req.tokens`, whoever appended them.
        return None

    def finish(self, req: RequestView) -> None:
        self._indexes.pop(req.id, None)

    def _index_for(self, req: RequestView) -> _Index:
        index = self._indexes.get(req.id)
        # Tolerate a missed `start` and a request id reused for a shorter request.
        if index is None or index.next_end > len(req.tokens):
            index = self._indexes[req.id] = _Index(self.min_n, self.max_n)
        return index

    def _catch_up(self, index: _Index, tokens: Sequence[int]) -> None:
        length = len(tokens)
        first = index.next_end
        if first >= length - 1:
            return
        lo = max(0, first - self.max_n + 1)
        window = tokens[lo:length]  # one slice: only the new tokens and max_n-1 before them
        grams, pairs, best, choice = index.grams, index.pairs, index.best, self.choice
        for end in range(first, length - 1):
            i = end - lo
            cont = end + 1
            for n in range(self.min_n, min(self.max_n, end + 1) + 1):
                key = tuple(window[i - n + 1 : i + 1])
                table = grams[n]
                if choice == "first":
                    table.setdefault(key, cont)
                elif choice == "last":
                    table[key] = cont
                else:
                    seen = table.get(key)
                    if seen is None:
                        # Most n-grams occur once: count nothing until a second sighting.
                        table[key] = cont
                        continue
                    if key not in best:
                        pairs[key + (tokens[seen],)] = best[key] = 1
                    pair = key + (window[i + 1],)
                    count = pairs[pair] = pairs.get(pair, 0) + 1
                    # Counts only grow, so `>=` keeps the argmax exact; ties go to the most
                    # recent token, and the best token's latest occurrence is the one copied.
                    if count >= best[key]:
                        best[key] = count
                        table[key] = cont
        index.next_end = length - 1

    def _propose_one(self, req: RequestView, budget: int) -> Draft | None:
        if budget <= 0:
            return None
        tokens = req.tokens
        index = self._index_for(req)
        self._catch_up(index, tokens)
        length = len(tokens)
        top = min(self.max_n, length - 1)
        if top < self.min_n:
            return None
        tail = tokens[length - top : length]
        for n in range(top, self.min_n - 1, -1):
            cont = index.grams[n].get(tuple(tail[top - n :]))
            if cont is not None:
                return Draft(tokens=_copy_forward(tokens, cont, budget), score=_score(n, budget), source=self.name)
        return None


def _copy_forward(tokens: Sequence[int], start: int, budget: int) -> list[int]:
    """`budget` tokens from `start` on; past the end of `tokens`, copy from the draft itself."""
    draft = list(tokens[start : start + budget])
    length = len(tokens)
    while len(draft) < budget:
        draft.append(draft[start + len(draft) - length])
    return draft


def _score(n: int, budget: int) -> float:
    """Expected accepted tokens of a `budget`-token draft: p1 * (1 + q + ... + q^(budget-1))."""
    p1, q = _ACCEPT_BY_MATCH[min(n, len(_ACCEPT_BY_MATCH)) - 1]
    return p1 * (1.0 - q**budget) / (1.0 - q)
