"""Whether training here should run its matmuls in bf16 (CPU autocast).

On a CPU with bf16 units (AVX-512 bf16, AMX) oneDNN runs bf16 matmuls several times faster than
float32, which is what sizes the zoo's training runs. On one without them (an AVX2-only CPU such
as a first-generation AMD EPYC) bf16 is emulated: the same matmul measured 3.5x *slower* than in
float32, and the tiny zoo that builds in ~20 s took over 20 minutes. There, training stays in
float32. Either way it is deterministic on one machine; weights differ between the two (the
committed zoo was trained with bf16).
"""

from __future__ import annotations

import functools
import os

import torch

ENV = "SPEC_SDK_TRAIN_BF16"  # "1" / "0" forces bf16 autocast on / off


@functools.cache
def bf16_autocast() -> bool:
    """True where bf16 autocast pays on this CPU (or `SPEC_SDK_TRAIN_BF16` says so)."""
    forced = os.environ.get(ENV)
    if forced is not None:
        return forced.strip().lower() not in ("0", "false", "no", "")
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a torch without the probe: AVX-512 is the usual sign
        return torch.backends.cpu.get_cpu_capability() in ("AVX512", "AMX")
