"""Llama-family weights, from a checkpoint directory (safetensors, single or sharded) or from a
transformers model in memory, laid out for the native forward.

Two fusions cut the number of matmuls per layer from seven to four: q/k/v become one `[q + 2 kv,
hidden]` matrix and gate/up one `[2 intermediate, hidden]` matrix. A tied head reuses the embedding
tensor itself. Unknown tensors are refused: a checkpoint with parts this forward does not compute
(q/k norms, sliding-window layers, extra heads) must not load and then give wrong logits.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs
import torch

from spec_sdk.backends.native.spec import LlamaSpec

_LAYER = re.compile(r"model\.layers\.(\d+)\.(.+)")
_LAYER_KEYS = {
    "input_layernorm.weight",
    "post_attention_layernorm.weight",
    *(f"self_attn.{p}_proj.{kind}" for p in "qkvo" for kind in ("weight", "bias")),
    *(f"mlp.{p}_proj.{kind}" for p in ("gate", "up", "down") for kind in ("weight", "bias")),
}
_TOP_KEYS = {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"}


@attrs.define(eq=False)
class LayerWeights:
    """One decoder layer. Linear weights are `[out, in]` tensors, or `Fp8Weight`s after quantising."""

    attn_norm: torch.Tensor
    qkv: Any
    qkv_bias: torch.Tensor | None
    o: Any
    o_bias: torch.Tensor | None
    mlp_norm: torch.Tensor
    gate_up: Any
    gate_up_bias: torch.Tensor | None
    down: Any
    down_bias: torch.Tensor | None


@attrs.define(eq=False)
class LlamaWeights:
    embed: torch.Tensor
    layers: list[LayerWeights]
    norm: torch.Tensor
    head: Any  # `embed` itself when the head is tied

    def nbytes(self) -> int:
        seen: set[int] = set()
        total = 0
        for t in _tensors(self):
            if id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * t.element_size()
        return total


def _tensors(w: LlamaWeights) -> list[torch.Tensor]:
    out: list[torch.Tensor] = []

    def add(x: Any) -> None:
        if isinstance(x, torch.Tensor):
            out.append(x)
        elif x is not None and attrs.has(type(x)):
            for field in attrs.fields(type(x)):
                add(getattr(x, field.name))

    add(w.embed)
    add(w.norm)
    add(w.head)
    for layer in w.layers:
        add(layer)
    return out


def _check_keys(keys: list[str], spec: LlamaSpec) -> None:
    unknown = []
    for key in keys:
        match = _LAYER.fullmatch(key)
        if match is not None and int(match.group(1)) < spec.num_layers and match.group(2) in _LAYER_KEYS:
            continue
        if key in _TOP_KEYS or key.endswith("rotary_emb.inv_freq"):
            continue
        unknown.append(key)
    if unknown:
        raise NotImplementedError(f"checkpoint holds tensors the native runner does not compute: {unknown[:6]}")


def build_weights(
    get: Callable[[str], torch.Tensor | None], spec: LlamaSpec, dtype: torch.dtype, device: torch.device
) -> LlamaWeights:
    """Assemble the runner's layout from `get(name)` (the transformers tensor, or None if absent)."""

    def need(name: str) -> torch.Tensor:
        t = get(name)
        if t is None:
            raise KeyError(f"checkpoint lacks {name}")
        return t.to(device=device, dtype=dtype).contiguous()

    def maybe(name: str) -> torch.Tensor | None:
        t = get(name)
        return None if t is None else t.to(device=device, dtype=dtype).contiguous()

    def cat(names: list[str]) -> torch.Tensor:
        return torch.cat([need(n) for n in names]).contiguous()

    def cat_bias(names: list[str], sizes: list[int]) -> torch.Tensor | None:
        parts = [maybe(n) for n in names]
        if all(p is None for p in parts):
            return None
        zeros = [torch.zeros(s, dtype=dtype, device=device) for s in sizes]
        return torch.cat([p if p is not None else z for p, z in zip(parts, zeros)]).contiguous()

    layers = []
    for i in range(spec.num_layers):
        a = f"model.layers.{i}.self_attn."
        m = f"model.layers.{i}.mlp."
        qkv = [f"{a}{p}_proj" for p in "qkv"]
        gate_up = [f"{m}gate_proj", f"{m}up_proj"]
        layers.append(
            LayerWeights(
                attn_norm=need(f"model.layers.{i}.input_layernorm.weight"),
                qkv=cat([f"{n}.weight" for n in qkv]),
                qkv_bias=cat_bias([f"{n}.bias" for n in qkv], [spec.q_size, spec.kv_size, spec.kv_size]),
                o=need(f"{a}o_proj.weight"),
                o_bias=maybe(f"{a}o_proj.bias"),
                mlp_norm=need(f"model.layers.{i}.post_attention_layernorm.weight"),
                gate_up=cat([f"{n}.weight" for n in gate_up]),
                gate_up_bias=cat_bias([f"{n}.bias" for n in gate_up], [spec.intermediate_size] * 2),
                down=need(f"{m}down_proj.weight"),
                down_bias=maybe(f"{m}down_proj.bias"),
            )
        )
    embed = need("model.embed_tokens.weight")
    head = embed if spec.tie_word_embeddings or get("lm_head.weight") is None else need("lm_head.weight")
    weights = LlamaWeights(embed=embed, layers=layers, norm=need("model.norm.weight"), head=head)
    _check_shapes(weights, spec)
    return weights


def _check_shapes(w: LlamaWeights, spec: LlamaSpec) -> None:
    h = spec.hidden_size
    want = {
        "embed": (w.embed.shape, (spec.vocab_size, h)),
        "qkv": (w.layers[0].qkv.shape, (spec.q_size + 2 * spec.kv_size, h)),
        "o": (w.layers[0].o.shape, (h, spec.q_size)),
        "gate_up": (w.layers[0].gate_up.shape, (2 * spec.intermediate_size, h)),
        "down": (w.layers[0].down.shape, (h, spec.intermediate_size)),
    }
    for name, (got, expected) in want.items():
        if tuple(got) != expected:
            raise ValueError(f"{name} weight has shape {tuple(got)}, the config implies {expected}")


def _safetensor_files(path: Path) -> list[Path]:
    index = path / "model.safetensors.index.json"
    if index.exists():
        shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        return [path / s for s in shards]
    single = path / "model.safetensors"
    if single.exists():
        return [single]
    raise FileNotFoundError(f"no model.safetensors (or sharded index) in {path}")


def load_dir(path: str | Path, spec: LlamaSpec, dtype: torch.dtype, device: torch.device) -> LlamaWeights:
    from safetensors import safe_open

    tensors: dict[str, torch.Tensor] = {}
    for file in _safetensor_files(Path(path)):
        with safe_open(str(file), framework="pt") as f:
            for key in f.keys():
                tensors[key] = f.get_tensor(key)
    _check_keys(list(tensors), spec)
    return build_weights(tensors.get, spec, dtype, device)


def load_state_dict(
    state: Mapping[str, torch.Tensor], spec: LlamaSpec, dtype: torch.dtype, device: torch.device
) -> LlamaWeights:
    """From a transformers `LlamaForCausalLM.state_dict()`; tensors that need no conversion are shared
    with the model (read only: nothing here writes to a weight)."""
    _check_keys(list(state), spec)
    with torch.no_grad():
        return build_weights(lambda k: None if k not in state else state[k].detach(), spec, dtype, device)
