"""The Proposer protocol and the read-only view of a request that proposers see."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol, overload, runtime_checkable

import torch

from spec_sdk.types import Draft, SamplingParams
from spec_sdk.verify.keyed import DrawBook, fresh_seed

if TYPE_CHECKING:
    from spec_sdk.types import SpecStats


class TokenList(Sequence[int]):
    """A read-only window on a growing list of token ids (no copy per step)."""

    __slots__ = ("_items",)

    def __init__(self, items: list[int]) -> None:
        self._items = items

    @overload
    def __getitem__(self, i: int) -> int: ...
    @overload
    def __getitem__(self, i: slice) -> list[int]: ...
    def __getitem__(self, i: int | slice) -> int | list[int]:
        return self._items[i]

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"TokenList({self._items!r})"


class RequestView:
    """What a proposer may know about a request. Read-only; the engine owns the state."""

    __slots__ = ("_id", "_tokens", "_prompt_len", "_params", "_stats", "_draws")

    def __init__(
        self, request_id: str, tokens: list[int], prompt_len: int, params: SamplingParams, stats: SpecStats,
        draws: DrawBook | None = None,
    ) -> None:
        self._id = request_id
        self._tokens = TokenList(tokens)
        self._prompt_len = prompt_len
        self._params = params
        self._stats = stats
        self._draws = draws

    @property
    def id(self) -> str:
        return self._id

    @property
    def tokens(self) -> TokenList:
        """Prompt and output so far; the last one is not yet in the target's KV cache."""
        return self._tokens

    @property
    def prompt_len(self) -> int:
        return self._prompt_len

    @property
    def params(self) -> SamplingParams:
        return self._params

    @property
    def stats(self) -> SpecStats:
        return self._stats

    @property
    def draws(self) -> DrawBook:
        """The request's keyed draws: a proposer that samples its draft tokens draws each with
        `draws.draft(position, tokens_before)`, so that runs differing only in how they
        speculate write the same text (spec_sdk.verify.keyed). A view made outside an engine
        gets a book of its own, from its seed."""
        if self._draws is None:
            seed = self._params.seed
            self._draws = DrawBook(seed if seed is not None else fresh_seed())
        return self._draws

    def __repr__(self) -> str:
        return f"RequestView(id={self._id!r}, len={len(self._tokens)}, prompt_len={self._prompt_len})"


@runtime_checkable
class Proposer(Protocol):
    """Guesses the next tokens of requests.

    `propose` is called once per step with every request that the policy asked this
    proposer about, and the draft budget of each; it returns one `Draft` (at most `budget`
    nodes) or `None` per request. A sampled draft must carry in `probs` the exact distribution
    each token was drawn from, warped with the request's own `SamplingParams`.
    """

    name: str
    needs_hidden_states: bool

    def start(self, req: RequestView) -> None: ...

    def propose(self, reqs: Sequence[RequestView], budgets: Sequence[int]) -> Sequence[Draft | None]: ...

    def observe(self, req: RequestView, accepted: Sequence[int], hidden: torch.Tensor | None) -> None: ...

    def finish(self, req: RequestView) -> None: ...
