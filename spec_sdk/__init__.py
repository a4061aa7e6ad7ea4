"""spec_sdk: lossless speculative decoding, embeddable and async.

A small proposer guesses the next tokens, the target model checks them all in one forward
pass, and accepted tokens come out several at a time. The output is exactly what the target
alone gives (greedy), or follows exactly its distribution (sampling).

    async with SpecEngine("path/to/model", proposers=["ngram"]) as engine:
        completion = await engine.generate("Hello", max_new_tokens=32)
        async for chunk in engine.stream("Hello", temperature=0.8, seed=1):
            print(chunk.text, end="")

    spec_sdk.generate("path/to/model", "Hello", proposers=["ngram"])   # blocking, for scripts

Extension points: `Proposer` (register under the entry-point group "spec_sdk.proposers"),
`Policy`, `TargetModel`. Test kit for plugin authors: `spec_sdk.testing`.
"""

from spec_sdk.adaptive import AdaptivePolicy
from spec_sdk.backends.base import ScoreItem, ScoreResult, TargetModel
from spec_sdk.backends.hf import HFBackend
from spec_sdk.backends.native import NativeBackend
from spec_sdk.blocking import generate
from spec_sdk.engine import EngineMetrics, RequestStream, SpecEngine
from spec_sdk.errors import (
    ConfigError,
    EngineClosedError,
    EngineFullError,
    InvalidRequestError,
    ProposerNotFoundError,
    RequestFailedError,
    SpecError,
)
from spec_sdk.policy import DEFER, CascadePolicy, FixedPolicy, Load, Outcome, Policy, StepFeedback
from spec_sdk.proposers.base import Proposer, RequestView
from spec_sdk.proposers.registry import available as available_proposers
from spec_sdk.proposers.registry import create as create_proposer
from spec_sdk.proposers.registry import register as register_proposer
from spec_sdk.types import Completion, Draft, SamplingParams, SpecStats, StepTimes, TokenChunk, Verdict
from spec_sdk.verify.keyed import DrawBook

__version__ = "0.1.0"

__all__ = [
    "AdaptivePolicy",
    "DEFER",
    "CascadePolicy",
    "Completion",
    "ConfigError",
    "Draft",
    "DrawBook",
    "EngineClosedError",
    "EngineFullError",
    "EngineMetrics",
    "FixedPolicy",
    "HFBackend",
    "InvalidRequestError",
    "Load",
    "Outcome",
    "NativeBackend",
    "Policy",
    "Proposer",
    "ProposerNotFoundError",
    "RequestFailedError",
    "RequestStream",
    "RequestView",
    "SamplingParams",
    "ScoreItem",
    "ScoreResult",
    "SpecEngine",
    "SpecError",
    "SpecStats",
    "StepFeedback",
    "StepTimes",
    "TargetModel",
    "TokenChunk",
    "Verdict",
    "available_proposers",
    "create_proposer",
    "generate",
    "register_proposer",
]
