"""KV cache as preallocated slots: one slot per request, every slot `max_len` positions long.

All of it is allocated once, so memory is fixed and known up front (`nbytes`) and a step never
allocates cache. Layout `[layers, slots, kv_heads, max_len + 1, head_dim]`: a slot's keys for one
head are contiguous, so attention reads a slot range as a strided view without copying. The extra
last position is scratch: padded rows of a batch write there, never over a real entry.

A slot holds `length` committed entries. A step writes its nodes after them; committing moves
only the accepted nodes of a tree into place (a chain's accepted prefix is already in place), and
the rest is simply left beyond `length` to be overwritten, so a rejection costs nothing.
"""

from __future__ import annotations

import heapq

import torch

from spec_sdk.backends.native.batch import host_tensor
from spec_sdk.backends.native.spec import LlamaSpec
from spec_sdk.errors import EngineFullError


class KVSlots:
    def __init__(self, spec: LlamaSpec, num_slots: int, max_len: int, dtype: torch.dtype, device: torch.device) -> None:
        if num_slots < 1 or max_len < 2:
            raise ValueError(f"need at least one slot of at least 2 positions, got {num_slots} x {max_len}")
        shape = (spec.num_layers, num_slots, spec.num_kv_heads, max_len + 1, spec.head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.num_slots = num_slots
        self.max_len = max_len
        self.scratch = max_len  # the position padded rows write to
        self._free = list(range(num_slots))  # a heap: the lowest free slot first keeps batches dense

    @property
    def nbytes(self) -> int:
        return 2 * self.k.numel() * self.k.element_size()

    @property
    def free_slots(self) -> int:
        return len(self._free)

    def alloc(self) -> int:
        if not self._free:
            raise EngineFullError(
                f"all {self.num_slots} KV-cache slots are in use; finish or cancel a request, or build the "
                "backend with more slots"
            )
        return heapq.heappop(self._free)

    def release(self, slot: int) -> None:
        heapq.heappush(self._free, slot)

    def move(self, slot: int, sources: list[int], start: int) -> None:
        """Copy positions `sources` of `slot` to `start, start + 1, ...`, in every layer at once.
        Advanced indexing reads the sources before writing, so overlapping ranges are safe."""
        if not sources:
            return
        index = host_tensor(sources, self.k.device)
        end = start + len(sources)
        self.k[:, slot, :, start:end] = self.k[:, slot, :, index]
        self.v[:, slot, :, start:end] = self.v[:, slot, :, index]
