"""CUDA graphs for the verify forward: one graph per (batch, width, attended length) bucket.

A step's rows are padded up to the next bucket (`make_batch` with `batch_size`, `width` and
`kv_len`), copied into the bucket's static input tensors, and the captured forward + LM head is
replayed: one launch instead of hundreds of small kernels, which is most of a small batch's step
on a fast GPU. Padding rows write only to the scratch position of slot 0, so they never touch a
request's cache; the real rows' outputs are gathered out of the static outputs (a copy, so the
next replay cannot overwrite what the step hands on).

Everything a replay depends on is a tensor: token ids, rotary positions, write positions, slots,
cache lengths and the ancestry matrix; the attention mask is rebuilt from them inside the graph.
The cache is read with `index_select` over the slots (`gather=True`), the one form that lets a
graph serve any set of slots.

Graphs are captured lazily, the first time a bucket is needed, after two eager warm-up runs on
a side stream (as `torch.cuda.graphs` asks); all of them share one memory pool. A step that fits
no bucket (wider drafts, more rows) runs eagerly.

CUDA only; this module imports without CUDA, and `GraphRunner` refuses a non-CUDA backend.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs
import torch

from spec_sdk.backends.native.batch import Batch, Row, host_tensor, make_batch
from spec_sdk.backends.native.model import forward, lm_head

if TYPE_CHECKING:
    from spec_sdk.backends.native.backend import NativeBackend

WIDTHS = (1, 2, 4, 8, 16, 32)
KV_STEP = 256  # attended length is rounded up to a multiple of this (capped at the slot length)


def _powers_up_to(limit: int) -> tuple[int, ...]:
    sizes = [1]
    while sizes[-1] < limit:
        sizes.append(min(2 * sizes[-1], limit))
    return tuple(sizes)


def _first_at_least(options: tuple[int, ...], value: int) -> int | None:
    return next((o for o in options if o >= value), None)


@attrs.define(eq=False)
class _Captured:
    graph: Any  # torch.cuda.CUDAGraph
    inputs: Batch
    hidden: torch.Tensor  # [B * T, H]
    logits: torch.Tensor  # [B * T, V]


class GraphRunner:
    def __init__(self, backend: NativeBackend, widths: tuple[int, ...] = WIDTHS, kv_step: int = KV_STEP) -> None:
        if backend.device.type != "cuda" or not torch.cuda.is_available():
            raise ValueError("CUDA graphs need a backend on a CUDA device")
        self.backend = backend
        self.batch_sizes = _powers_up_to(backend.kv.num_slots)
        self.widths = widths
        self.kv_lengths = tuple(sorted({min(n, backend.max_context) for n in range(kv_step, backend.max_context + kv_step, kv_step)}))
        self.pool = torch.cuda.graph_pool_handle()
        self.graphs: dict[tuple[int, int, int], _Captured] = {}
        self.replays = 0
        self.eager_fallbacks = 0

    def bucket(self, rows: list[Row]) -> tuple[int, int, int] | None:
        b = _first_at_least(self.batch_sizes, len(rows))
        t = _first_at_least(self.widths, max(r.size for r in rows))
        kv = _first_at_least(self.kv_lengths, max(r.length + r.size for r in rows))
        if b is None or t is None or kv is None:
            return None
        return b, t, kv

    def run(self, rows: list[Row]) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Hidden states and logits of the rows' real nodes (flattened), or None when no bucket
        fits and the caller should run eagerly."""
        key = self.bucket(rows)
        if key is None:
            self.eager_fallbacks += 1
            return None
        captured = self.graphs.get(key)
        if captured is None:
            captured = self.graphs[key] = self._capture(*key)
        b, t, kv = key
        scratch = self.backend.kv.scratch
        host = make_batch(rows, scratch, torch.device("cpu"), width=t, kv_len=kv, batch_size=b)
        for name in ("ids", "pos", "write", "slots", "lengths", "ancestry"):
            # pinned staging so the copies are truly asynchronous
            getattr(captured.inputs, name).copy_(getattr(host, name).pin_memory(), non_blocking=True)
        captured.graph.replay()
        self.replays += 1
        index = host_tensor([i * t + j for i, r in enumerate(rows) for j in range(r.size)], self.backend.device)
        return captured.hidden.index_select(0, index), captured.logits.index_select(0, index)

    def _capture(self, b: int, t: int, kv: int) -> _Captured:
        be = self.backend
        dummy = [Row(slot=0, length=0, last_token=0)]
        # All padding: a capture (and its warm-up) writes only to scratch positions.
        inputs = make_batch(dummy, be.kv.scratch, be.device, width=t, kv_len=kv, batch_size=b)
        inputs = attrs.evolve(inputs, write=torch.full_like(inputs.write, be.kv.scratch))

        def body() -> tuple[torch.Tensor, torch.Tensor]:
            hidden = forward(be.spec, be.weights, be.rope, be.kv, inputs, be.linear, gather=True)
            flat = hidden.reshape(b * t, -1)
            return flat, lm_head(be.weights, flat, be.linear)

        with torch.inference_mode():
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(2):
                    body()
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                hidden, logits = body()
        return _Captured(graph, inputs, hidden, logits)
