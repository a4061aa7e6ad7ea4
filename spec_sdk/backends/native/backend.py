"""`NativeBackend`: the fast `TargetModel` for Llama-family models.

It owns the model: weights loaded into the layout of `model.py`, a KV cache of preallocated
slots (`kv.py`), and one forward per `score` call for every request of the step, each with its
own cache length and its own draft, chain or tree (`batch.py`). Optional: FP8 weights
(`fp8.py`) and CUDA graphs for the verify forward (`graphs.py`).

Capacity is fixed at construction: `max_slots` requests of up to `max_len` tokens each. `add`
on a full cache raises `EngineFullError`; `memory()` reports what the cache and weights hold.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from spec_sdk.backends.base import ScoreItem, ScoreResult, is_root_path
from spec_sdk.backends.native.batch import Row, make_batch
from spec_sdk.backends.native.cpu import can_pack, cpu_linear, pack_weights, padded_rows
from spec_sdk.backends.native.fp8 import fp8_linear, quantize_weights
from spec_sdk.backends.native.kv import KVSlots
from spec_sdk.backends.native.model import Linear, dense_linear, forward, lm_head
from spec_sdk.backends.native.rope import rope_tables
from spec_sdk.backends.native.spec import LlamaSpec, spec_from_config, spec_from_dir
from spec_sdk.backends.native.weights import LlamaWeights, load_dir, load_state_dict
from spec_sdk.errors import InvalidRequestError
from spec_sdk.types import Draft

DEFAULT_MAX_LEN = 4096  # when the model allows more: a slot's memory grows with it


class _Slot:
    __slots__ = ("index", "length", "fed", "parents")

    def __init__(self, index: int) -> None:
        self.index = index
        self.length = 0  # committed cache entries
        self.fed = 0  # entries written by the last score, awaiting commit
        self.parents: tuple[int, ...] | None = None  # the last scored tree; None = a chain


def _load(model: Any, dtype: torch.dtype | None, device: torch.device) -> tuple[LlamaSpec, LlamaWeights, torch.dtype]:
    if isinstance(model, (str, Path)):
        spec = spec_from_dir(model)
        dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
        return spec, load_dir(model, spec, dtype, device), dtype
    spec = spec_from_config(model.config, getattr(model, "generation_config", None))
    dtype = dtype or next(model.parameters()).dtype
    return spec, load_state_dict(model.state_dict(), spec, dtype, device), dtype


class NativeBackend:
    """A `TargetModel` that runs Llama-family models itself.

    `model`: a checkpoint directory (config.json + safetensors) or a transformers
    `LlamaForCausalLM` (also Mistral / Qwen2 with the Llama layer). `dtype` defaults to the
    in-memory model's dtype, or float32 (CPU) / bfloat16 (CUDA) for a checkpoint; `device` to the
    in-memory model's device, or the CPU.
    `max_slots` requests of at most `max_len` tokens fit at once (default: the model's context,
    at most 4096). `fp8` quantises the decoder's matmuls to e4m3; `cuda_graphs` replays captured
    verify forwards (CUDA only). `warm_nodes`: on a CPU, the matmul kernels for forwards of up
    to `max_slots * warm_nodes` nodes are built at construction (default: every slot with an
    8-token draft; about 3 s for the zoo's target at 64 slots, and never past 768 nodes), so
    that no step pays for one (larger forwards build theirs when first seen).
    """

    supports_trees = True

    def __init__(
        self,
        model: Any,
        *,
        max_slots: int = 32,
        max_len: int | None = None,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        fp8: bool = False,
        cuda_graphs: bool = False,
        warm_nodes: int = 9,
    ) -> None:
        if warm_nodes < 0:
            raise ValueError(f"warm_nodes must be >= 0, got {warm_nodes}")
        if device is None:  # an in-memory model stays where it is; a checkpoint loads onto the CPU
            params = None if isinstance(model, (str, Path)) else next(model.parameters(), None)
            device = params.device if params is not None else "cpu"
        self.device = torch.device(device)
        spec, weights, self.dtype = _load(model, dtype, self.device)
        self.spec = spec
        limit = min(spec.max_position_embeddings, DEFAULT_MAX_LEN) if max_len is None else int(max_len)
        if spec.sliding_window is not None:
            # within the window sliding attention is full attention, so capping the context keeps it exact
            limit = min(limit, spec.sliding_window)
        self.max_context = limit
        self.vocab_size = spec.vocab_size
        self.hidden_size = spec.hidden_size
        self.eos_token_ids = spec.eos_token_ids
        self.linear: Linear = dense_linear
        self._rows_for: Callable[[int], int] | None = None
        if fp8:
            weights = quantize_weights(weights)
            self.linear = fp8_linear
        elif can_pack(self.dtype, self.device):
            weights = pack_weights(weights, rows=max_slots * warm_nodes)
            self.linear = cpu_linear
            self._rows_for = padded_rows
        self.weights = weights
        self.rope = rope_tables(spec, limit, self.dtype, self.device)
        self.kv = KVSlots(spec, max_slots, limit, self.dtype, self.device)
        self.graphs: Any = None
        if cuda_graphs:
            from spec_sdk.backends.native.graphs import GraphRunner

            self.graphs = GraphRunner(self)
        self._slots: dict[str, _Slot] = {}

    # -- capacity --------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._slots)

    @property
    def max_slots(self) -> int:
        return self.kv.num_slots

    def memory(self) -> dict[str, int]:
        """Bytes held by the KV cache (all slots, preallocated) and the weights; slot usage."""
        return {
            "kv_cache_bytes": self.kv.nbytes,
            "weight_bytes": self.weights.nbytes(),
            "slots": self.kv.num_slots,
            "slots_in_use": self.kv.num_slots - self.kv.free_slots,
            "max_len": self.max_context,
        }

    def cached_length(self, request_id: str) -> int:
        return self._slots[request_id].length

    # -- the forward -----------------------------------------------------------------------

    def _run(self, rows: list[Row], want_logits: bool = True) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Hidden states and logits of the rows' real nodes, flattened row after row."""
        with torch.inference_mode():
            if self.graphs is not None and want_logits:
                out = self.graphs.run(rows)
                if out is not None:
                    return out
            batch = make_batch(rows, self.kv.scratch, self.device, rows_for=self._rows_for)
            hidden = forward(self.spec, self.weights, self.rope, self.kv, batch, self.linear)
            # rows of different sizes come back packed (the real nodes, then maybe a few padding
            # nodes: the head runs on as many rows); equal rows are all real
            flat = hidden if batch.real is not None else hidden.reshape(-1, hidden.shape[-1])
            logits = lm_head(self.weights, flat, self.linear)[: batch.nodes] if want_logits else None
        return flat[: batch.nodes], logits

    # -- TargetModel -----------------------------------------------------------------------

    def add(self, request_id: str, prompt: Sequence[int]) -> None:
        if request_id in self._slots:
            raise InvalidRequestError(f"request {request_id!r} is already in the backend")
        if not prompt:
            raise InvalidRequestError("prompt must hold at least one token")
        if len(prompt) > self.max_context:
            raise InvalidRequestError(f"prompt of {len(prompt)} tokens does not fit a slot of {self.max_context}")
        if any(not 0 <= int(t) < self.vocab_size for t in prompt):
            raise InvalidRequestError(f"prompt holds token ids outside [0, {self.vocab_size})")
        slot = _Slot(self.kv.alloc())  # EngineFullError when every slot is taken
        try:
            if len(prompt) > 1:
                body = [int(t) for t in prompt[:-1]]
                rest = Draft(tokens=body[1:]) if len(body) > 1 else None
                self._run([Row(slot.index, 0, body[0], rest)], want_logits=False)
                slot.length = len(body)
        except BaseException:
            self.kv.release(slot.index)
            raise
        self._slots[request_id] = slot

    def score(self, items: Sequence[ScoreItem]) -> list[ScoreResult]:
        if not items:
            return []
        rows = []
        for item in items:
            slot = self._slots.get(item.request_id)
            if slot is None:
                raise KeyError(f"request {item.request_id!r} is not in the backend")
            if slot.fed:
                raise RuntimeError(f"request {item.request_id!r} scored twice without a commit")
            if slot.length + item.num_nodes > self.max_context:
                raise InvalidRequestError(
                    f"request {item.request_id!r}: {slot.length} cached + {item.num_nodes} fed exceeds the slot's "
                    f"{self.max_context} positions"
                )
            rows.append(Row(slot.index, slot.length, int(item.last_token), item.draft))
        # Rows in slot order, so consecutive slots are read as one view of the cache.
        order = sorted(range(len(rows)), key=lambda i: rows[i].slot)
        hidden, logits = self._run([rows[i] for i in order])
        assert logits is not None
        results: list[ScoreResult | None] = [None] * len(items)
        start = 0
        for i in order:
            item = items[i]
            size = item.num_nodes
            hid = hidden[start : start + size] if item.want_hidden else None
            results[i] = ScoreResult(logits=logits[start : start + size], hidden=hid)
            start += size
            slot = self._slots[item.request_id]
            slot.fed = size
            draft = item.draft
            slot.parents = None if draft is None or draft.is_chain else draft.parents
        return results  # type: ignore[return-value]

    def commit(self, request_id: str, path: Sequence[int]) -> None:
        slot = self._slots[request_id]
        path = [int(i) for i in path]
        if slot.fed == 0:
            raise ValueError(f"request {request_id!r} has no scored step to commit")
        n = slot.fed - 1
        in_place = path == list(range(len(path)))
        if slot.parents is None and (not in_place or len(path) > n):
            raise ValueError(f"path {path} is not a prefix of the last chain draft")
        if slot.parents is not None and not is_root_path(slot.parents, path):
            raise ValueError(f"path {path} is not a root-to-node path of the last draft tree")
        if not in_place:
            root = slot.length
            with torch.inference_mode():
                self.kv.move(slot.index, [root + 1 + i for i in path], root + 1)
        slot.length += 1 + len(path)
        slot.fed = 0
        slot.parents = None

    def truncate(self, request_id: str, length: int) -> None:
        """Keep only the first `length` cached entries of a request (a draft model rolling back to
        what the target accepted). Free: later entries are just left to be overwritten."""
        slot = self._slots[request_id]
        if not 0 <= length <= slot.length:
            raise ValueError(f"cannot truncate request {request_id!r} to {length}: it holds {slot.length}")
        if slot.fed:
            raise RuntimeError(f"request {request_id!r} has a scored step awaiting commit")
        slot.length = length

    def remove(self, request_id: str) -> None:
        slot = self._slots.pop(request_id, None)
        if slot is not None:
            self.kv.release(slot.index)

