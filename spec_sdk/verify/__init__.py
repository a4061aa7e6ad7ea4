"""Verification: the target's sampling distribution and the acceptance of drafts (greedy and
rejection sampling, chain and tree)."""

from spec_sdk.verify.chain import acceptance_probs, residual, verify, verify_batch
from spec_sdk.verify.warp import make_generator, sample, sample_with_uniforms, uniforms, warp_probs

__all__ = [
    "acceptance_probs",
    "make_generator",
    "residual",
    "sample",
    "sample_with_uniforms",
    "uniforms",
    "verify",
    "verify_batch",
    "warp_probs",
]
