"""Policies: per request and step, which proposers to ask, with what budget, and which draft to use."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol, runtime_checkable

import attrs

from spec_sdk.errors import ConfigError
from spec_sdk.proposers.base import RequestView
from spec_sdk.types import Draft


@attrs.frozen
class Load:
    """What the engine looks like this step, for policies that adapt to load."""

    batch_size: int
    waiting: int = 0


@runtime_checkable
class Policy(Protocol):
    """`plan` names the proposers to ask and the draft budget `k` of each (an empty mapping, or
    k = 0, means: do not speculate for this request this step). `choose` picks one of the
    drafts returned (or none)."""

    def plan(self, req: RequestView, load: Load) -> Mapping[str, int]: ...

    def choose(self, req: RequestView, drafts: Mapping[str, Draft | None]) -> Draft | None: ...


@attrs.frozen
class FixedPolicy:
    """Always ask one proposer for `k` tokens; `proposer=None` or `k=0` is target-only decoding."""

    proposer: str | None = None
    k: int = 4

    def __attrs_post_init__(self) -> None:
        if self.k < 0:
            raise ConfigError(f"k must be >= 0, got {self.k}")

    def plan(self, req: RequestView, load: Load) -> Mapping[str, int]:
        if self.proposer is None or self.k == 0:
            return {}
        return {self.proposer: self.k}

    def choose(self, req: RequestView, drafts: Mapping[str, Draft | None]) -> Draft | None:
        if self.proposer is None:
            return None
        return drafts.get(self.proposer)
