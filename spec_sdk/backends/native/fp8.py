"""FP8 (e4m3) weights with one scale per output channel, and the matmul that uses them.

A weight row `w[o]` is stored as `q[o] = e4m3(w[o] / s[o])` with `s[o] = max|w[o]| / 448`, so every
row uses the format's whole range. At run time activations are quantised the same way per row
(dynamic, one scale per token) and the product is `(q_x q_w^T) * s_x s_w^T`.

Two ways to compute it, same numbers up to accumulation order:
- `torch._scaled_mm` (FP8 tensor cores) where the GPU has them: compute capability >= 8.9
  (Ada, Hopper and later);
- a dequantising path everywhere else (CPU, older GPUs): the same quantised activations and
  weights turned back into the compute dtype and multiplied with `F.linear`. CPU tests run this
  path, and check it against `torch._scaled_mm`'s CPU implementation, so the arguments handed
  to the GPU kernel (layouts, scale shapes) are tested too.

Embeddings, norms and the LM head stay in the compute dtype (`quantize_weights(head=False)`):
the head decides every token and costs one matmul.
"""

from __future__ import annotations

import functools

import attrs
import torch
import torch.nn.functional as F

from spec_sdk.backends.native.weights import LlamaWeights

E4M3 = torch.float8_e4m3fn
E4M3_MAX = 448.0
_TINY = 1e-12  # an all-zero row still gets a usable scale


@attrs.frozen(eq=False)
class Fp8Weight:
    q: torch.Tensor  # [out, in] e4m3
    scale: torch.Tensor  # [out] float32

    @property
    def shape(self) -> torch.Size:
        return self.q.shape


def quantize(weight: torch.Tensor) -> Fp8Weight:
    w = weight.detach().to(torch.float32)
    scale = (w.abs().amax(dim=1) / E4M3_MAX).clamp(min=_TINY)
    q = (w / scale[:, None]).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3)
    return Fp8Weight(q.contiguous(), scale.contiguous())


def dequantize(w: Fp8Weight, dtype: torch.dtype) -> torch.Tensor:
    return (w.q.to(torch.float32) * w.scale[:, None]).to(dtype)


def quantize_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Activations `[M, K]` -> (e4m3 `[M, K]`, float32 scales `[M, 1]`)."""
    xf = x.to(torch.float32)
    scale = (xf.abs().amax(dim=-1, keepdim=True) / E4M3_MAX).clamp(min=_TINY)
    return (xf / scale).clamp(-E4M3_MAX, E4M3_MAX).to(E4M3), scale


def has_fp8_matmul(device: torch.device) -> bool:
    return device.type == "cuda" and _cuda_has_fp8(device.index)


@functools.lru_cache(maxsize=None)
def _cuda_has_fp8(index: int | None) -> bool:
    return hasattr(torch, "_scaled_mm") and torch.cuda.get_device_capability(index) >= (8, 9)


def _shapes_fit(k: int, n: int) -> bool:
    return k % 16 == 0 and n % 16 == 0  # cuBLASLt FP8 needs both divisible by 16


def scaled_mm_linear(x: torch.Tensor, w: Fp8Weight, bias: torch.Tensor | None) -> torch.Tensor:
    """`x @ w^T (+ bias)` through `torch._scaled_mm` (row-wise scales both sides)."""
    lead = x.shape[:-1]
    xq, sx = quantize_rows(x.reshape(-1, x.shape[-1]))
    # row-wise scaled FP8 GEMMs on the GPU write bf16 only; the CPU kernel takes float32 too
    out_dtype = torch.bfloat16 if x.is_cuda else torch.float32
    out = torch._scaled_mm(xq, w.q.t(), scale_a=sx, scale_b=w.scale[None, :], out_dtype=out_dtype)
    out = out.to(x.dtype)
    if bias is not None:
        out = out + bias
    return out.reshape(*lead, -1)


def dequant_linear(x: torch.Tensor, w: Fp8Weight, bias: torch.Tensor | None) -> torch.Tensor:
    """The same product without FP8 hardware: quantise, dequantise, `F.linear`."""
    lead = x.shape[:-1]
    xq, sx = quantize_rows(x.reshape(-1, x.shape[-1]))
    x_dq = (xq.to(torch.float32) * sx).to(x.dtype)
    return F.linear(x_dq, dequantize(w, x.dtype), bias).reshape(*lead, -1)


def fp8_linear(x: torch.Tensor, w: torch.Tensor | Fp8Weight, bias: torch.Tensor | None) -> torch.Tensor:
    """The runner's linear when FP8 is on: dense weights pass through, FP8 ones take the fastest
    path the device has."""
    if not isinstance(w, Fp8Weight):
        return F.linear(x, w, bias)
    if has_fp8_matmul(x.device) and _shapes_fit(w.shape[1], w.shape[0]):
        return scaled_mm_linear(x, w, bias)
    return dequant_linear(x, w, bias)


def quantize_weights(w: LlamaWeights, head: bool = False) -> LlamaWeights:
    """A copy of `w` whose decoder matmuls (and with `head`, the LM head) are FP8."""
    layers = [
        attrs.evolve(layer, qkv=quantize(layer.qkv), o=quantize(layer.o), gate_up=quantize(layer.gate_up),
                     down=quantize(layer.down))
        for layer in w.layers
    ]
    return attrs.evolve(w, layers=layers, head=quantize(w.head) if head else w.head)
