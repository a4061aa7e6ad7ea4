"""The reference backend: any transformers causal LM, one request at a time.

Widest coverage, not the fast path: each request keeps its own `DynamicCache`, and a step
runs one forward per request over `[last token] + draft`. Rejected draft entries are
cropped from the cache at commit.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, DynamicCache, PreTrainedModel

from spec_sdk.backends.base import ScoreItem, ScoreResult
from spec_sdk.errors import InvalidRequestError


class _Slot:
    __slots__ = ("cache", "length", "fed")

    def __init__(self, cache: DynamicCache, length: int) -> None:
        self.cache = cache
        self.length = length  # tokens in the cache that belong to the sequence
        self.fed = 0  # entries appended by the last score, awaiting commit


def _eos_ids(model: PreTrainedModel) -> tuple[int, ...]:
    ids: Any = None
    gen = getattr(model, "generation_config", None)
    if gen is not None:
        ids = gen.eos_token_id
    if ids is None:
        ids = getattr(model.config, "eos_token_id", None)
    if ids is None:
        return ()
    return tuple(int(i) for i in ids) if isinstance(ids, (list, tuple)) else (int(ids),)


class HFBackend:
    """Wraps a transformers causal LM (an object or a local path) as a `TargetModel`."""

    def __init__(
        self,
        model: PreTrainedModel | str | Path,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        max_context: int | None = None,
    ) -> None:
        if isinstance(model, (str, Path)):
            model = AutoModelForCausalLM.from_pretrained(str(model), dtype=dtype or torch.float32)
        elif dtype is not None:
            model = model.to(dtype)
        if device is not None:
            model = model.to(device)
        self.model: PreTrainedModel = model.eval()
        cfg = model.config
        self.vocab_size: int = int(model.get_output_embeddings().weight.shape[0])
        self.hidden_size: int = int(cfg.hidden_size)
        self.eos_token_ids: tuple[int, ...] = _eos_ids(model)
        self.max_context: int = int(max_context or getattr(cfg, "max_position_embeddings", 2048))
        self.device: torch.device = next(model.parameters()).device
        self.dtype: torch.dtype = next(model.parameters()).dtype
        self._slots: dict[str, _Slot] = {}

    def __len__(self) -> int:
        return len(self._slots)

    def _forward(self, slot: _Slot, ids: Sequence[int], want_hidden: bool) -> Any:
        n = len(ids)
        input_ids = torch.tensor([list(ids)], dtype=torch.long, device=self.device)
        positions = torch.arange(slot.length, slot.length + n, device=self.device).unsqueeze(0)
        with torch.inference_mode():
            return self.model(
                input_ids=input_ids,
                position_ids=positions,
                past_key_values=slot.cache,
                use_cache=True,
                output_hidden_states=want_hidden,
            )

    def add(self, request_id: str, prompt: Sequence[int]) -> None:
        if request_id in self._slots:
            raise InvalidRequestError(f"request {request_id!r} is already in the backend")
        if not prompt:
            raise InvalidRequestError("prompt must hold at least one token")
        slot = _Slot(DynamicCache(config=self.model.config), 0)
        if len(prompt) > 1:
            self._forward(slot, prompt[:-1], want_hidden=False)
            slot.length = len(prompt) - 1
        self._slots[request_id] = slot

    def score(self, items: Sequence[ScoreItem]) -> list[ScoreResult]:
        results = []
        for item in items:
            slot = self._slots[item.request_id]
            if slot.fed:
                raise RuntimeError(f"request {item.request_id!r} scored twice without a commit")
            draft = item.draft
            if draft is not None and not draft.is_chain:
                raise NotImplementedError("the hf backend verifies chains; pass draft.truncated to a chain")
            ids = [item.last_token, *(draft.tokens if draft is not None else ())]
            out = self._forward(slot, ids, item.want_hidden)
            slot.fed = len(ids)
            hidden = out.hidden_states[-1][0] if item.want_hidden else None
            results.append(ScoreResult(logits=out.logits[0], hidden=hidden))
        return results

    def commit(self, request_id: str, path: Sequence[int]) -> None:
        slot = self._slots[request_id]
        if list(path) != list(range(len(path))) or len(path) >= max(slot.fed, 1):
            raise ValueError(f"path {list(path)} is not a prefix of the last chain draft")
        keep = 1 + len(path)
        drop = slot.fed - keep
        if drop:
            slot.cache.crop(-drop)
        slot.length += keep
        slot.fed = 0

    def remove(self, request_id: str) -> None:
        self._slots.pop(request_id, None)

    def cached_length(self, request_id: str) -> int:
        """Tokens held in the request's KV cache (for tests and metrics)."""
        return self._slots[request_id].length
