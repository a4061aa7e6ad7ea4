"""What the native runner needs to know about a Llama-family model, read from its transformers
config (a `config.json` dict or a `PretrainedConfig`).

Only architectures the runner computes exactly are accepted: pre-norm decoder layers with RMSNorm,
rotary attention (default, linear or Llama-3 frequency scaling), grouped-query attention with
optional q/k/v biases (Qwen2) and a SwiGLU MLP. Anything else is refused here with the reason,
rather than run with a silently different forward.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

# Families whose decoder is the plain Llama layer (Qwen2 adds q/k/v biases, read from the weights).
SUPPORTED_TYPES = ("llama", "mistral", "qwen2")
ROPE_TYPES = ("default", "linear", "llama3")


@attrs.frozen
class LlamaSpec:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float
    rope_theta: float
    rope_type: str = "default"
    rope_factor: float = 1.0
    rope_low_freq_factor: float = 1.0
    rope_high_freq_factor: float = 4.0
    rope_original_max_position: int = 8192
    max_position_embeddings: int = 2048
    sliding_window: int | None = None
    tie_word_embeddings: bool = False
    eos_token_ids: tuple[int, ...] = ()

    def __attrs_post_init__(self) -> None:
        if self.num_heads % self.num_kv_heads:
            raise ValueError(f"{self.num_heads} attention heads do not split into {self.num_kv_heads} KV groups")
        if self.rope_type not in ROPE_TYPES:
            raise NotImplementedError(f"rope type {self.rope_type!r} is not supported (have {ROPE_TYPES})")

    @property
    def q_size(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_kv_heads * self.head_dim


def _get(cfg: Mapping[str, Any], key: str, default: Any = None) -> Any:
    value = cfg.get(key, default)
    return default if value is None else value


def _eos(cfg: Mapping[str, Any], generation: Mapping[str, Any] | None) -> tuple[int, ...]:
    # generation_config wins, as it does for transformers' generate()
    ids = (generation or {}).get("eos_token_id")
    if ids is None:
        ids = cfg.get("eos_token_id")
    if ids is None:
        return ()
    return tuple(int(i) for i in ids) if isinstance(ids, (list, tuple)) else (int(ids),)


def _rope(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """transformers 5 keeps rotary settings in `rope_parameters`; 4.x in `rope_theta` + `rope_scaling`."""
    params = dict(cfg.get("rope_parameters") or {})
    scaling = dict(cfg.get("rope_scaling") or {})
    merged = {**scaling, **params}
    rope_type = merged.get("rope_type", merged.get("type", "default"))
    return {
        "rope_theta": float(merged.get("rope_theta", cfg.get("rope_theta", 10000.0))),
        "rope_type": str(rope_type),
        "rope_factor": float(merged.get("factor", 1.0)),
        "rope_low_freq_factor": float(merged.get("low_freq_factor", 1.0)),
        "rope_high_freq_factor": float(merged.get("high_freq_factor", 4.0)),
        "rope_original_max_position": int(
            merged.get("original_max_position_embeddings", cfg.get("max_position_embeddings", 8192))
        ),
    }


def spec_from_dict(cfg: Mapping[str, Any], generation: Mapping[str, Any] | None = None) -> LlamaSpec:
    """A spec from a transformers config dict (`config.json`, or `PretrainedConfig.to_dict()`)."""
    model_type = cfg.get("model_type", "llama")
    if model_type not in SUPPORTED_TYPES:
        raise NotImplementedError(f"model_type {model_type!r} is not a supported Llama-family model {SUPPORTED_TYPES}")
    act = cfg.get("hidden_act", "silu")
    if act != "silu":
        raise NotImplementedError(f"hidden_act {act!r}: the native runner implements SwiGLU (silu) only")
    if float(cfg.get("partial_rotary_factor", 1.0) or 1.0) != 1.0:
        raise NotImplementedError("partial rotary embeddings are not supported")
    heads = int(cfg["num_attention_heads"])
    hidden = int(cfg["hidden_size"])
    window = cfg.get("sliding_window")
    if model_type == "qwen2" and not cfg.get("use_sliding_window", False):
        window = None  # Qwen2 configs carry a window they do not use
    return LlamaSpec(
        vocab_size=int(cfg["vocab_size"]),
        hidden_size=hidden,
        intermediate_size=int(cfg["intermediate_size"]),
        num_layers=int(cfg["num_hidden_layers"]),
        num_heads=heads,
        num_kv_heads=int(_get(cfg, "num_key_value_heads", heads)),
        head_dim=int(_get(cfg, "head_dim", hidden // heads)),
        rms_norm_eps=float(_get(cfg, "rms_norm_eps", 1e-6)),
        max_position_embeddings=int(_get(cfg, "max_position_embeddings", 2048)),
        sliding_window=None if window is None else int(window),
        tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        eos_token_ids=_eos(cfg, generation),
        **_rope(cfg),
    )


def spec_from_config(config: Any, generation: Any = None) -> LlamaSpec:
    """A spec from a transformers `PretrainedConfig` (and optionally its `GenerationConfig`)."""
    gen = None if generation is None else {"eos_token_id": getattr(generation, "eos_token_id", None)}
    return spec_from_dict(config.to_dict(), gen)


def spec_from_dir(path: str | Path) -> LlamaSpec:
    path = Path(path)
    cfg = json.loads((path / "config.json").read_text())
    gen_path = path / "generation_config.json"
    gen = json.loads(gen_path.read_text()) if gen_path.exists() else None
    return spec_from_dict(cfg, gen)
