"""Proposer names -> factories, through the `spec_sdk.proposers` entry-point group.

Built-in proposers are declared in our own pyproject.toml exactly as a plugin declares
its own, so there is one lookup path for both.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any, Callable

from spec_sdk.errors import ProposerNotFoundError
from spec_sdk.proposers.base import Proposer

GROUP = "spec_sdk.proposers"

ProposerFactory = Callable[..., Proposer]

_local: dict[str, ProposerFactory] = {}


def register(name: str, factory: ProposerFactory) -> None:
    """Register a factory in this process (tests and notebooks; packages use entry points)."""
    _local[name] = factory


def available() -> list[str]:
    """Every proposer name that `create` accepts."""
    return sorted(set(_local) | {ep.name for ep in entry_points(group=GROUP)})


def lookup(name: str) -> ProposerFactory:
    if name in _local:
        return _local[name]
    for ep in entry_points(group=GROUP):
        if ep.name == name:
            factory: ProposerFactory = ep.load()
            return factory
    raise ProposerNotFoundError(f"no proposer named {name!r}; available: {', '.join(available()) or 'none'}")


def create(name: str, **options: Any) -> Proposer:
    """Build the proposer registered as `name`, passing `options` to its factory."""
    proposer = lookup(name)(**options)
    if not isinstance(proposer, Proposer):
        raise ProposerNotFoundError(f"entry point {name!r} did not build a Proposer: {proposer!r}")
    return proposer
