"""The reference backend: any transformers causal LM, one request at a time.

Widest coverage, not the fast path: each request keeps its own `DynamicCache`, and a step
runs one forward per request over `[last token] + draft`. Rejected draft entries are
cropped from the cache at commit.

Trees: a non-chain draft is scored in the same single forward with explicit positions (cached
length + depth) and a 4-D additive float mask `[1, 1, 1 + n, past + 1 + n]` in which every node
sees the cached context, the root and its own ancestors. transformers passes a 4-D mask through
unchanged to the attention function; eager adds it to the scores and sdpa hands it to
`scaled_dot_product_attention`, so both compute exactly tree attention. Committing a tree path
gathers the kept entries (root, then the path's nodes) into place in every layer and crops the
rest.

Everything else is not trusted with trees, and then `supports_trees` is False and the engine
sends each draft's first chain: flash-attention kernels take only a 2-D padding mask;
transformers' flex attention would add a dense mask as a score_mod, but it compiles per shape and
refuses float64 on CPU, so it is left out rather than half supported; and caches that are not all
plain `DynamicLayer`s (sliding-window layers need their own mask, linear-attention and quantized
layers keep state that gathering positions would corrupt).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, DynamicCache, PreTrainedModel
from transformers.cache_utils import DynamicLayer

from spec_sdk.backends.base import ScoreItem, ScoreResult, is_root_path
from spec_sdk.errors import InvalidRequestError


# Attention implementations that apply a dense 4-D additive mask as given.
_TREE_ATTENTION = ("eager", "sdpa")


class _Slot:
    __slots__ = ("cache", "length", "fed", "parents")

    def __init__(self, cache: DynamicCache, length: int) -> None:
        self.cache = cache
        self.length = length  # tokens in the cache that belong to the sequence
        self.fed = 0  # entries appended by the last score, awaiting commit
        self.parents: tuple[int, ...] | None = None  # the last scored tree's shape; None = a chain


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


def _accepts_tree_masks(model: PreTrainedModel) -> bool:
    """Whether a 4-D float mask gives this model tree attention and its cache can be compacted."""
    if getattr(model.config, "_attn_implementation", None) not in _TREE_ATTENTION:
        return False
    try:
        layers = DynamicCache(config=model.config).layers
    except Exception:  # a config DynamicCache cannot read: do not guess
        return False
    # Exact type: subclasses (sliding window, linear attention, ...) keep state a gather would break.
    return all(type(layer) is DynamicLayer for layer in layers)


def _depths(parents: Sequence[int]) -> list[int]:
    """Depth of each node below the root (a child of the root has depth 1)."""
    depth: list[int] = []
    for parent in parents:
        depth.append(1 + (depth[parent] if parent >= 0 else 0))
    return depth


def tree_mask(parents: Sequence[int], past: int, dtype: torch.dtype) -> torch.Tensor:
    """Additive mask `[1, 1, 1 + n, past + 1 + n]`: 0 where a query may attend, the dtype's most
    negative value elsewhere. Row 0 is the root, row 1 + i node i; each sees the `past` cached
    entries, the root, and itself and its ancestors."""
    n = len(parents)
    sees = torch.zeros(1 + n, 1 + n, dtype=torch.bool)
    sees[0, 0] = True
    for node, parent in enumerate(parents):
        sees[1 + node] = sees[1 + parent]  # parents come first, so their row is complete
        sees[1 + node, 1 + node] = True
    mask = torch.zeros(1 + n, past + 1 + n, dtype=dtype)
    mask[:, past:] = torch.zeros(1 + n, 1 + n, dtype=dtype).masked_fill(~sees, torch.finfo(dtype).min)
    return mask[None, None]


class HFBackend:
    """Wraps a transformers causal LM (an object or a local path) as a `TargetModel`."""

    def __init__(
        self,
        model: PreTrainedModel | str | Path,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        max_context: int | None = None,
        trees: bool | None = None,
    ) -> None:
        """`trees`: None detects whether the model can score draft trees (see the module
        docstring), False forces chains only; True is refused for a model that cannot."""
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
        accepts = _accepts_tree_masks(model)
        if trees and not accepts:
            raise ValueError(
                f"this model cannot score draft trees (attention {cfg._attn_implementation!r}, or a cache that "
                "is not all plain DynamicLayer); leave trees=None to fall back to chains"
            )
        self.supports_trees: bool = accepts if trees is None else bool(trees)
        self._slots: dict[str, _Slot] = {}

    def __len__(self) -> int:
        return len(self._slots)

    def _forward(
        self, slot: _Slot, ids: Sequence[int], want_hidden: bool, parents: Sequence[int] | None = None
    ) -> Any:
        """One forward over `ids` after the slot's cache: a causal chain, or with `parents` the tree
        `[root] + nodes` (ids[0] the root) under tree attention."""
        n = len(ids)
        input_ids = torch.tensor([list(ids)], dtype=torch.long, device=self.device)
        mask = None
        if parents is None:
            positions = torch.arange(slot.length, slot.length + n).unsqueeze(0)
        else:
            positions = torch.tensor([[slot.length + d for d in [0, *_depths(parents)]]])
            mask = tree_mask(parents, slot.length, self.dtype).to(self.device, non_blocking=True)
        with torch.inference_mode():
            return self.model(
                input_ids=input_ids,
                attention_mask=mask,
                position_ids=positions.to(self.device, non_blocking=True),
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
            parents = None if draft is None or draft.is_chain else draft.parents
            if parents is not None and not self.supports_trees:
                raise NotImplementedError("this model scores chains only (supports_trees is False); send a chain")
            ids = [item.last_token, *(draft.tokens if draft is not None else ())]
            out = self._forward(slot, ids, item.want_hidden, parents)
            slot.fed = len(ids)
            slot.parents = parents
            hidden = out.hidden_states[-1][0] if item.want_hidden else None
            results.append(ScoreResult(logits=out.logits[0], hidden=hidden))
        return results

    def commit(self, request_id: str, path: Sequence[int]) -> None:
        slot = self._slots[request_id]
        path = [int(i) for i in path]
        n = slot.fed - 1
        if slot.fed == 0:
            raise ValueError(f"request {request_id!r} has no scored step to commit")
        in_place = path == list(range(len(path)))  # a prefix of the fed order: cropping suffices
        if slot.parents is None and (not in_place or len(path) > n):
            raise ValueError(f"path {path} is not a prefix of the last chain draft")
        if slot.parents is not None and not is_root_path(slot.parents, path):
            raise ValueError(f"path {path} is not a root-to-node path of the last draft tree")
        if not in_place:
            self._gather_path(slot, path)
        drop = n - len(path)
        if drop:
            slot.cache.crop(-drop)
        slot.length += 1 + len(path)
        slot.fed = 0
        slot.parents = None

    def _gather_path(self, slot: _Slot, path: list[int]) -> None:
        """Move the path's entries to just after the root, in every layer; the tail is cropped next.
        Only the fed tail is rewritten, so this costs O(path), not O(context)."""
        root = slot.length
        source = torch.tensor([root + 1 + i for i in path], device=self.device)
        with torch.inference_mode():  # the cached tensors are inference tensors
            for layer in slot.cache.layers:
                # Advanced indexing copies the source first, so overlapping ranges are safe.
                layer.keys[..., root + 1 : root + 1 + len(path), :] = layer.keys[..., source, :]
                layer.values[..., root + 1 : root + 1 + len(path), :] = layer.values[..., source, :]

    def remove(self, request_id: str) -> None:
        self._slots.pop(request_id, None)

    def cached_length(self, request_id: str) -> int:
        """Tokens held in the request's KV cache (for tests and metrics)."""
        return self._slots[request_id].length
