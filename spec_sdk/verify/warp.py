"""The sampling distribution of a target row, and seeded draws from it.

`warp_probs` must give exactly the distribution transformers' `generate` samples from (temperature,
then top-k, top-p, min-p), because losslessness is measured against it and because a draft proposer
that samples has to warp its own logits the same way to report the `q` the verifier relies on.

All randomness is drawn as float64 uniforms, per request (keyed by seed and position in the engine:
spec_sdk.verify.keyed; from a generator in turn where a caller passes one), and turned into tokens by
inverse CDF, so a request's draws depend only on its own seed, never on its batch neighbours.
"""

from __future__ import annotations

import os
from typing import Sequence

import torch
from torch import Tensor

from spec_sdk.types import SamplingParams

_NEG_INF = float("-inf")


def to_device(values: Sequence[float] | Sequence[int], dtype: torch.dtype, device: torch.device) -> Tensor:
    """A small tensor built on the host and sent without waiting: a blocking host-to-device copy
    syncs the stream, i.e. waits for the target's forward, and a step may sync only once."""
    return torch.tensor(values, dtype=dtype).to(device, non_blocking=True)


def working_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64 (exact tests); everything else is warped in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _per_row(params: SamplingParams | Sequence[SamplingParams], n: int) -> list[SamplingParams]:
    rows = [params] * n if isinstance(params, SamplingParams) else list(params)
    if len(rows) != n:
        raise ValueError(f"warp_probs got {len(rows)} SamplingParams for {n} rows")
    if any(p.greedy for p in rows):
        raise ValueError("greedy params (temperature == 0) have no sampling distribution; take the argmax")
    return rows


def warp_probs(logits: Tensor, params: SamplingParams | Sequence[SamplingParams]) -> Tensor:
    """Row-wise sampling distribution `[N, V]` after temperature, top-k, top-p and min-p.

    One SamplingParams applies to every row; a sequence gives one per row. Ties follow
    transformers on CPU: top-k keeps every token tied with the k-th, and top-p drops tied tokens
    in ascending vocabulary order (a stable sort, so the choice is the same on every device).
    """
    if logits.dim() != 2:
        raise ValueError(f"warp_probs expects logits [N, V], got shape {tuple(logits.shape)}")
    n, v = logits.shape
    rows = _per_row(params, n)
    dtype = working_dtype(logits.dtype)
    device = logits.device

    def column(values: list[float]) -> Tensor:
        return to_device(values, dtype, device).unsqueeze(1)

    temperatures = {p.temperature for p in rows}
    # (one temperature for all rows, the common case, divides by a number: no tensor to build)
    x = logits.to(dtype) / (temperatures.pop() if len(temperatures) == 1 else column([p.temperature for p in rows]))

    use_top_k = any(0 < p.top_k < v for p in rows)
    use_top_p = any(p.top_p < 1.0 for p in rows)
    # top_k == 0 is "off" and top_k >= V keeps everything: both become k = V, which drops nothing.
    k_list = [p.top_k if 0 < p.top_k < v else v for p in rows]
    if use_top_k or use_top_p:
        k = to_device(k_list, torch.int64, device).unsqueeze(1)
    if use_top_k and not use_top_p:
        # A partial top-k is far cheaper than a full sort of a large vocabulary.
        largest = torch.topk(x, max(k_list), dim=-1).values
        x = x.masked_fill(x < largest.gather(1, k - 1), _NEG_INF)
    elif use_top_p:
        # One ascending sort serves both filters: top-k's cut is a prefix of it, and masking that
        # prefix to -inf leaves exactly the order TopPLogitsWarper would get by sorting again.
        sorted_x, order = torch.sort(x, dim=-1, stable=True)
        drop_sorted = sorted_x < sorted_x.gather(1, v - k)  # below the k-th largest; ties survive
        sorted_x = sorted_x.masked_fill(drop_sorted, _NEG_INF)
        cumulative = sorted_x.softmax(dim=-1).cumsum(dim=-1)
        # 1 - top_p is taken in Python double as transformers does; -1 is unreachable, so rows
        # with top_p == 1 are left alone just as generate() skips the warper for them.
        limit = column([1.0 - p.top_p if p.top_p < 1.0 else -1.0 for p in rows])
        drop_p = cumulative <= limit
        drop_p[:, -1] = False  # min_tokens_to_keep=1: the most likely token always survives
        drop = torch.empty_like(drop_sorted).scatter_(1, order, drop_sorted | drop_p)
        x = x.masked_fill(drop, _NEG_INF)

    if any(p.min_p > 0.0 for p in rows):
        probs = x.softmax(dim=-1)
        top = probs.amax(dim=-1, keepdim=True)
        drop = probs < column([p.min_p for p in rows]) * top
        drop.scatter_(1, probs.argmax(dim=-1, keepdim=True), False)
        x = x.masked_fill(drop, _NEG_INF)

    return x.softmax(dim=-1)


def make_generator(seed: int | None) -> torch.Generator:
    """A CPU generator; fresh OS entropy when `seed` is None, so unseeded requests still differ."""
    if seed is None:
        seed = int.from_bytes(os.urandom(8), "little") >> 1
    generator = torch.Generator(device="cpu")
    generator.manual_seed(seed % 2**64)  # torch takes 64 bits; SamplingParams allows any int >= 0
    return generator


def uniforms(generator: torch.Generator | None, count: int) -> Tensor:
    """`count` float64 uniforms in [0, 1) from `generator` (torch's global RNG when None)."""
    device = generator.device if generator is not None else torch.device("cpu")
    return torch.rand(count, generator=generator, dtype=torch.float64, device=device)


def sample_with_uniforms(probs: Tensor, u: Tensor) -> Tensor:
    """Inverse-CDF draw: row i gets the first token whose cumulative mass exceeds `u[i]` x total.

    Rows need not be normalised. A token with zero mass is never returned.
    """
    cdf = probs.to(torch.float64).cumsum(dim=-1)
    target = u.to(device=probs.device, dtype=torch.float64, non_blocking=True) * cdf[:, -1]
    index = torch.searchsorted(cdf, target.unsqueeze(1), right=True).squeeze(1)
    # u x total can round up to total itself; clamp to the last token that has mass, not to V - 1.
    last_with_mass = probs.shape[1] - 1 - (probs > 0).flip(-1).to(torch.int32).argmax(dim=-1)
    return torch.minimum(index, last_with_mass)


def sample(probs: Tensor, generators: Sequence[torch.Generator | None]) -> Tensor:
    """One token per row of `probs` [N, V] (int64 [N]), row i drawn with `generators[i]`."""
    if probs.dim() != 2 or len(generators) != probs.shape[0]:
        raise ValueError(f"sample needs probs [N, V] and N generators, got {tuple(probs.shape)} and {len(generators)}")
    if probs.shape[0] == 0:
        return torch.zeros(0, dtype=torch.int64, device=probs.device)
    u = torch.cat([uniforms(g, 1).cpu() for g in generators])
    return sample_with_uniforms(probs, u)
