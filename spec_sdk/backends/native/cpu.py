"""CPU matmuls: each weight kept in two layouts, one for single rows and one for batches.

`F.linear` on CPU runs MKL's sgemm on the plain `[out, in]` weight. Measured on the zoo target
(2-core AMD EPYC, one thread, A/B interleaved in one process, all 25 matmuls of a step):
- one row (decode at batch 1): `x @ W^T` with `W^T` stored contiguous `[in, out]` is the fastest,
  about 1.35x `F.linear` and 1.15x oneDNN;
- several rows (batched decode, verification, prefill): oneDNN's linear on a weight reordered
  once into its blocked layout is the fastest, about 1.8x `F.linear` at 16 rows, 1.4x at 60.
Keeping both doubles the weights' memory (reported by `NativeBackend.memory()`); a CPU runner of
a small model spends far more on the KV slots. float32 only (oneDNN has no float64 linear), and
only if a probe product on this machine matches `F.linear`; otherwise `F.linear` runs.
"""

from __future__ import annotations

import attrs
import torch
import torch.nn.functional as F

from spec_sdk.backends.native.weights import LlamaWeights

# Packed layouts are chosen for a batch-size hint; 16 rows served batched decode (2..32 rows)
# and prefill (hundreds of rows) alike in the measurements above.
BATCH_HINT = 16
# oneDNN builds a kernel for each new row count the first time it sees it: about 0.5 ms a weight
# shape, 2-3 ms a forward of the zoo's draft (measured: a 4-token catch-up took 2.8 ms the first
# time, 0.65 ms after). Row counts up to this are built when the weights are packed: they are a
# lone request's verifications and a draft model's catch-ups, and a first slow call of each
# priced a draft model at three times its cost in the adaptive policy's fit.
WARM_ROWS = 16
# Past that, a forward's row count (the batch's real nodes) is padded up to a multiple of this,
# and those counts are built too, up to `pack_weights`' `rows`. A batch of 16 with drafts has
# rows anywhere in 17..144; each count first seen cost its forward a quarter more (11 ms for 8
# warm), most forwards of a short run paid it, and the policy priced draft tokens at twice their
# cost. Four rows more cost a matmul about 2% (measured 24 rows as fast as 17, 64 rows 0.55 ms,
# 72 rows 0.62 ms); oneDNN keeps 1024 kernels, and five weight shapes times 64 slots times 9
# nodes a row, counted one by one, would not fit.
ROW_STEP = 4
# ...but no further than this many rows: past ~190 counts, five weight shapes' kernels would
# not fit oneDNN's cache, and building them would only evict each other (and take minutes at
# 512 slots)
WARM_LIMIT = 768


@attrs.frozen(eq=False)
class CpuWeight:
    packed: torch.Tensor  # oneDNN blocked layout of `[out, in]`
    rows_major: torch.Tensor  # `[in, out]` contiguous, for one-row products

    @property
    def shape(self) -> torch.Size:
        return self.packed.shape


def _pack(weight: torch.Tensor) -> CpuWeight:
    return CpuWeight(torch.ops.mkldnn._reorder_linear_weight(weight, BATCH_HINT), weight.t().contiguous())


def cpu_linear(x: torch.Tensor, weight: torch.Tensor | CpuWeight, bias: torch.Tensor | None) -> torch.Tensor:
    if not isinstance(weight, CpuWeight):
        return F.linear(x, weight, bias)
    if x.numel() == x.shape[-1]:  # a single row
        out = torch.mm(x.reshape(1, -1), weight.rows_major)
        if bias is not None:
            out = out + bias
        return out.view(*x.shape[:-1], -1)
    return torch.ops.mkldnn._linear_pointwise(x, weight.packed, bias, "none", [], "")


def can_pack(dtype: torch.dtype, device: torch.device) -> bool:
    if device.type != "cpu" or dtype != torch.float32 or not torch.backends.mkldnn.is_available():
        return False
    try:
        g = torch.Generator().manual_seed(0)
        w = torch.randn(48, 32, generator=g)
        packed = _pack(w)
        with torch.inference_mode():
            ok = all(
                torch.allclose(cpu_linear(x, packed, None), F.linear(x, w), rtol=1e-5, atol=1e-5)
                for x in (torch.randn(1, 32, generator=g), torch.randn(2, 3, 32, generator=g))
            )
        return bool(ok)
    except Exception:  # an op missing from this torch build: keep F.linear
        return False


def padded_rows(n: int) -> int:
    """The row count a forward of `n` real nodes runs at (see ROW_STEP)."""
    return n if n <= WARM_ROWS else -(-n // ROW_STEP) * ROW_STEP


def pack_weights(w: LlamaWeights, rows: int = WARM_ROWS) -> LlamaWeights:
    """A copy of `w` whose matmul weights (decoder and head) are `CpuWeight`s, with oneDNN's
    kernels built for every row count a forward of up to `rows` nodes runs at."""
    with torch.inference_mode():
        layers = [
            attrs.evolve(layer, qkv=_pack(layer.qkv), o=_pack(layer.o), gate_up=_pack(layer.gate_up),
                         down=_pack(layer.down))
            for layer in w.layers
        ]
        packed = attrs.evolve(w, layers=layers, head=_pack(w.head))
        _warm(packed, rows)
        return packed


def _warm(w: LlamaWeights, rows: int) -> None:
    """Build oneDNN's kernels for the row counts (padded_rows) of 2..`rows` rows of every weight
    shape (every layer has the same)."""
    if not w.layers:
        return
    layer = w.layers[0]
    pairs = ((layer.qkv, layer.qkv_bias), (layer.o, layer.o_bias), (layer.gate_up, layer.gate_up_bias),
             (layer.down, layer.down_bias), (w.head, None))
    counts = sorted({padded_rows(m) for m in range(2, min(max(rows, WARM_ROWS), WARM_LIMIT) + 1)})
    for weight, bias in pairs:
        x = torch.zeros(counts[-1], weight.rows_major.shape[0], dtype=weight.rows_major.dtype)
        for m in counts:
            cpu_linear(x[:m], weight, bias)
