"""Engine configuration: the typed form, and the vLLM / Arctic Inference dict users already know."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Literal

import attrs

from spec_sdk.errors import ConfigError
from spec_sdk.policy import CascadePolicy, Policy
from spec_sdk.proposers import registry
from spec_sdk.proposers.base import Proposer

# vLLM's `method` names -> our registry names
_METHODS = {
    "ngram": "ngram",
    "prompt_lookup": "ngram",
    "suffix": "suffix",
    "draft_model": "draft_model",
    "mlp_speculator": "mlp_speculator",
    "arctic": "mlp_speculator",
    "lstm_speculator": "lstm_speculator",
}

# vLLM option names -> our proposer options
_OPTION_NAMES = {
    "prompt_lookup_min": "min_n",
    "prompt_lookup_max": "max_n",
}

ProposerSpec = tuple[str, Mapping[str, Any]] | Proposer


@attrs.frozen
class EngineConfig:
    proposers: tuple[ProposerSpec, ...] = ()
    policy: Policy | None = None
    num_speculative_tokens: int = 4
    max_batch: int = 32
    max_waiting: int = 256
    admission: Literal["reject", "wait"] = "reject"

    def __attrs_post_init__(self) -> None:
        if self.num_speculative_tokens < 0:
            raise ConfigError("num_speculative_tokens must be >= 0")
        if self.max_batch < 1 or self.max_waiting < 0:
            raise ConfigError("max_batch must be >= 1 and max_waiting >= 0")
        if self.admission not in ("reject", "wait"):
            raise ConfigError(f"admission must be 'reject' or 'wait', got {self.admission!r}")

    @classmethod
    def from_args(
        cls,
        *,
        proposers: Sequence[str | Proposer] | Mapping[str, Mapping[str, Any]],
        num_speculative_tokens: int,
        speculative_config: Mapping[str, Any] | None,
        **rest: Any,
    ) -> EngineConfig:
        specs: list[ProposerSpec] = []
        if isinstance(proposers, Mapping):
            specs.extend((name, dict(opts)) for name, opts in proposers.items())
        else:
            for p in proposers:
                specs.append((p, {}) if isinstance(p, str) else p)
        k = num_speculative_tokens
        policy = None
        if speculative_config is not None:
            extra, k, policy = parse_speculative_config(speculative_config)
            specs.extend(extra)
        return cls(proposers=tuple(specs), num_speculative_tokens=k, policy=policy, **rest)


def parse_speculative_config(cfg: Mapping[str, Any]) -> tuple[list[ProposerSpec], int, Policy | None]:
    """Read `{"method": ..., "model": ..., "num_speculative_tokens": ..., ...}`.

    Unknown keys become options of the proposer, renamed where vLLM's names differ from ours.
    `"enable_suffix_decoding": true` next to a method gives Arctic Inference's combination:
    a cascade that uses the suffix draft when it scores at least `num_speculative_tokens`,
    and the method's draft otherwise.
    """
    cfg = dict(cfg)
    k = int(cfg.pop("num_speculative_tokens", 4))
    suffix = bool(cfg.pop("enable_suffix_decoding", False))
    method = cfg.pop("method", None)
    specs: list[ProposerSpec] = []
    if method is not None:
        if method not in _METHODS:
            raise ConfigError(f"unknown speculative method {method!r}; known: {', '.join(sorted(_METHODS))}")
        options = {_OPTION_NAMES.get(key, key): value for key, value in cfg.items()}
        specs.append((_METHODS[method], options))
    elif cfg:
        raise ConfigError(f"options {sorted(cfg)} given without a 'method'")
    policy: Policy | None = None
    if suffix and _METHODS.get(method or "") != "suffix":
        specs.insert(0, ("suffix", {}))
        if method is not None:
            policy = CascadePolicy(("suffix", _METHODS[method]), k)
    return specs, k, policy


def build_proposers(specs: Sequence[ProposerSpec]) -> dict[str, Proposer]:
    out: dict[str, Proposer] = {}
    for spec in specs:
        proposer = registry.create(spec[0], **spec[1]) if isinstance(spec, tuple) else spec
        if proposer.name in out:
            raise ConfigError(f"two proposers are named {proposer.name!r}")
        out[proposer.name] = proposer
    return out

