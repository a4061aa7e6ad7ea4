"""A blocking front door for scripts: one call, one completion, no event loop to manage."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import anyio

from spec_sdk.engine import SpecEngine
from spec_sdk.policy import Policy
from spec_sdk.proposers.base import Proposer
from spec_sdk.types import Completion, SamplingParams


def generate(
    target: Any,
    prompt: str | Sequence[int],
    params: SamplingParams | None = None,
    *,
    proposers: Sequence[str | Proposer] | Mapping[str, Mapping[str, Any]] = (),
    policy: Policy | None = None,
    tokenizer: Any = None,
    num_speculative_tokens: int = 4,
    speculative_config: Mapping[str, Any] | None = None,
    **sampling: Any,
) -> Completion:
    """Generate one completion with speculative decoding and return it.

    Starts an engine for the call; for many requests keep a `SpecEngine` open instead.
    Keyword arguments beyond the engine's are `SamplingParams` fields.
    """

    async def run() -> Completion:
        async with SpecEngine(
            target,
            proposers=proposers,
            policy=policy,
            tokenizer=tokenizer,
            num_speculative_tokens=num_speculative_tokens,
            speculative_config=speculative_config,
        ) as engine:
            return await engine.generate(prompt, params, **sampling)

    return anyio.run(run)
