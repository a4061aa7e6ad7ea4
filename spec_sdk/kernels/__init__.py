"""GPU kernels (CuPy, optional) with torch fallbacks that double as their test oracles.

`accept_greedy` / `accept_sampled`: the fused acceptance step over a padded batch of chain drafts.
"""

from spec_sdk.kernels.acceptance import accept_greedy, accept_sampled, greedy_torch, sampled_torch

__all__ = ["accept_greedy", "accept_sampled", "greedy_torch", "sampled_torch"]
