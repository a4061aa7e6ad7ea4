"""spec_sdk's public test kit: toy targets, target-only references, adversarial proposers and
hypothesis strategies, for the SDK's own tests and for plugin authors proving a proposer
lossless.

`strategies` needs hypothesis (a dev dependency), so it is imported from its own module:
`from spec_sdk.testing.strategies import prompts, sampling_params, drafts`.
"""

from spec_sdk.testing.adversarial import (
    FaultyProposer,
    OracleProposer,
    RandomProposer,
    RecordingProposer,
    SampledRandomProposer,
    WrongProposer,
    greedy_next_fn,
)
from spec_sdk.testing.targets import (
    KVConventionError,
    TableTarget,
    exact_sequence_distribution,
    greedy_step,
    reference_greedy,
    tie_aware_equal,
    tiny_llama,
)

from spec_sdk.testing.check import LosslessReport, check_lossless, chi_square, run_concurrently

__all__ = [
    "FaultyProposer",
    "KVConventionError",
    "LosslessReport",
    "OracleProposer",
    "RandomProposer",
    "RecordingProposer",
    "SampledRandomProposer",
    "TableTarget",
    "WrongProposer",
    "check_lossless",
    "chi_square",
    "exact_sequence_distribution",
    "greedy_next_fn",
    "greedy_step",
    "reference_greedy",
    "run_concurrently",
    "tie_aware_equal",
    "tiny_llama",
]
