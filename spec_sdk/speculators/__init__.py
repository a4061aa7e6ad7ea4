"""Speculators: small heads that draft from the target's own last hidden state.

`MLPSpeculator` (IBM's format) and `LSTMSpeculator` (Arctic Inference's `sum_lstm` / `sum_rnn`),
their published config formats, and checkpoint reading/writing. The proposer that drives them is
`spec_sdk.proposers.speculator`; `spec_sdk.training` distils them from a target.
"""

from spec_sdk.speculators.base import Speculator, SpecNorm
from spec_sdk.speculators.checkpoint import build, load_speculator, read_config, resolve_checkpoint, save_speculator
from spec_sdk.speculators.config import LSTMSpeculatorConfig, MLPSpeculatorConfig, SpeculatorConfig, parse_config
from spec_sdk.speculators.lstm import LSTMSpeculator
from spec_sdk.speculators.mlp import MLPSpeculator

__all__ = [
    "LSTMSpeculator",
    "LSTMSpeculatorConfig",
    "MLPSpeculator",
    "MLPSpeculatorConfig",
    "SpecNorm",
    "Speculator",
    "SpeculatorConfig",
    "build",
    "load_speculator",
    "parse_config",
    "read_config",
    "resolve_checkpoint",
    "save_speculator",
]
