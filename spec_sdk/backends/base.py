"""The TargetModel protocol: what the engine needs from the model being accelerated."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, runtime_checkable

import attrs
import torch

from spec_sdk.types import Draft


@attrs.frozen(eq=False)
class ScoreItem:
    """One request's share of a step's forward: its last token (not yet cached) and its draft."""

    request_id: str
    last_token: int
    draft: Draft | None = None
    want_hidden: bool = False

    @property
    def num_nodes(self) -> int:
        return 1 + (len(self.draft) if self.draft is not None else 0)


@attrs.frozen(eq=False)
class ScoreResult:
    """Logits `[1 + n, V]` for the root (last token) and each draft node, and on request the
    last-layer hidden states `[1 + n, H]` at the same positions."""

    logits: torch.Tensor
    hidden: torch.Tensor | None = None


def is_root_path(parents: Sequence[int], path: Sequence[int]) -> bool:
    """Whether `path` (draft node indices) runs from a child of the root down a tree with these
    `parents`, each node the child of the one before: what `commit` may keep."""
    previous = -1
    for node in path:
        if not 0 <= node < len(parents) or parents[node] != previous:
            return False
        previous = node
    return True


@runtime_checkable
class TargetModel(Protocol):
    """A model the engine can speculate against.

    KV-cache convention: after `add(rid, prompt)` the cache holds `prompt[:-1]`; the last
    token is always fed by `score`. `commit(rid, path)` keeps the root and the accepted draft
    nodes `path` (indices into the draft, root to leaf), dropping the rest; the token the
    verifier adds after the path is fed by the next `score`.

    `supports_trees`: whether `score` accepts a non-chain draft (every node attending to the
    cached context, the root and its own ancestors only) and `commit` a root-to-node path of it.
    When False the engine sends only each draft's first chain (each node's first child).
    """

    vocab_size: int
    hidden_size: int
    eos_token_ids: tuple[int, ...]
    max_context: int
    device: torch.device
    dtype: torch.dtype
    supports_trees: bool

    def add(self, request_id: str, prompt: Sequence[int]) -> None: ...

    def score(self, items: Sequence[ScoreItem]) -> list[ScoreResult]: ...

    def commit(self, request_id: str, path: Sequence[int]) -> None: ...

    def remove(self, request_id: str) -> None: ...
