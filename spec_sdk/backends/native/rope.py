"""Rotary position tables: inverse frequencies (default, linear, Llama-3 scaling) and cos/sin for
every position a KV slot can hold, computed once.

The tables are computed in float32 and then cast, exactly as transformers does (its rotary module
multiplies float32 positions by float32 frequencies whatever the model dtype), so a float64 model
matches transformers to rounding rather than to float32's precision.
"""

from __future__ import annotations

import math

import attrs
import torch

from spec_sdk.backends.native.spec import LlamaSpec


def inv_freq(spec: LlamaSpec) -> torch.Tensor:
    dim = spec.head_dim
    base = 1.0 / (spec.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.int64).to(torch.float32) / dim))
    if spec.rope_type == "linear":
        return base / spec.rope_factor
    if spec.rope_type != "llama3":
        return base
    # Llama 3.1: long wavelengths are slowed by `factor`, short ones kept, the band between blended.
    factor = spec.rope_factor
    low, high = spec.rope_low_freq_factor, spec.rope_high_freq_factor
    old = spec.rope_original_max_position
    low_wavelen, high_wavelen = old / low, old / high
    wavelen = 2 * math.pi / base
    scaled = torch.where(wavelen > low_wavelen, base / factor, base)
    smooth = (old / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = ~(wavelen < high_wavelen) * ~(wavelen > low_wavelen)
    return torch.where(medium, smoothed, scaled)


@attrs.frozen(eq=False)
class RopeTables:
    """`cos`/`sin` `[positions, head_dim]`; `sin` carries rotate_half's sign on its first half, so
    rotating is `x * cos + swap_halves(x) * sin`."""

    cos: torch.Tensor
    sin: torch.Tensor


def rope_tables(spec: LlamaSpec, positions: int, dtype: torch.dtype, device: torch.device) -> RopeTables:
    freqs = torch.arange(positions, dtype=torch.float32)[:, None] * inv_freq(spec)[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    cos = emb.cos().to(dtype)
    sin = emb.sin().to(dtype)
    half = spec.head_dim // 2
    sin[:, :half] = -sin[:, :half]
    return RopeTables(cos.to(device), sin.to(device))


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate `x` `[..., heads, head_dim]` by `cos`/`sin` `[..., 1, head_dim]` (broadcast over heads)."""
    half = x.shape[-1] // 2
    swapped = torch.cat((x[..., half:], x[..., :half]), dim=-1)
    return x * cos + swapped * sin
