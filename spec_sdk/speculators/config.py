"""The published config.json formats of MLP and LSTM speculators, read strictly and written back.

MLP: IBM's MLPSpeculator (fms-extras `MLPSpeculatorConfig`, vLLM's
`transformers_utils/configs/mlp_speculator.py`): `n_predict`, `emb_dim` (the target's hidden
size), `inner_dim` (0 = emb_dim), `vocab_size`, `tie_weights`, `scale_input`; architectures
`MLPSpeculatorPreTrainedModel`, model_type `mlp_speculator`.

LSTM: Arctic Inference / ArcticTraining's `ArcticLSTMSpeculatorConfig`: `method` (`sum_lstm` or
`sum_rnn`), `input_hidden_dim` (the target's hidden size), `inner_dim`, `emb_dim`, `proj_dim`
(written as strings, "a.b" meaning stacked layers), `vocab_size`, `n_predict`, `tie_weights`,
`tie_lstm_embs`, `scale_input`; architectures `ArcticLSTMSpeculatorPreTrainedModel`, model_type
also `mlp_speculator`.

Reading is strict where a silent default would load the wrong model: a missing size is an error
(vLLM would default vocab_size to 32000), and so is any key that is neither a field of the format
nor ordinary transformers metadata (a typo such as `n_predicts` must not be ignored).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any, Literal

import attrs

from spec_sdk.errors import ConfigError

MLP_ARCH = "MLPSpeculatorPreTrainedModel"
LSTM_ARCH = "ArcticLSTMSpeculatorPreTrainedModel"
MODEL_TYPE = "mlp_speculator"
METHODS = ("sum_lstm", "sum_rnn")

# Written by the publishers' save code beside the model fields; read and ignored.
_FORMAT_METADATA = frozenset({
    "architectures", "model_type", "n_candidates", "top_k_tokens_per_head", "torch_dtype", "dtype",
    "transformers_version", "base_model_name_or_path", "_name_or_path", "num_lookahead_tokens",
})


# Attributes of transformers 4.x's PretrainedConfig, which `save_pretrained` wrote into checkpoints
# of that era whenever they differed from the default (transformers 5 dropped most of them).
_PRETRAINED_4X = frozenset("""
    return_dict output_hidden_states output_attentions torchscript use_bfloat16 tf_legacy_loss pruned_heads
    tie_word_embeddings chunk_size_feed_forward is_encoder_decoder is_decoder cross_attention_hidden_size
    add_cross_attention tie_encoder_decoder max_length min_length do_sample early_stopping num_beams
    num_beam_groups diversity_penalty temperature top_k top_p typical_p repetition_penalty length_penalty
    no_repeat_ngram_size encoder_no_repeat_ngram_size bad_words_ids num_return_sequences output_scores
    return_dict_in_generate forced_bos_token_id forced_eos_token_id remove_invalid_values
    exponential_decay_length_penalty suppress_tokens begin_suppress_tokens finetuning_task id2label label2id
    tokenizer_class prefix bos_token_id pad_token_id eos_token_id sep_token_id decoder_start_token_id
    task_specific_params problem_type
""".split())


@functools.lru_cache(maxsize=1)
def _pretrained_defaults() -> frozenset[str]:
    """Keys a transformers `PretrainedConfig.save_pretrained` may write (bos_token_id, ...)."""
    try:
        from transformers import PretrainedConfig

        return _PRETRAINED_4X | frozenset(PretrainedConfig().to_dict())
    except Exception:  # transformers missing or changed: the 4.x list still covers old checkpoints
        return _PRETRAINED_4X


def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"speculator config: {name} must be an int >= 1, got {value!r}")
    return value


def _flag(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"speculator config: {name} must be true or false, got {value!r}")
    return value


def _dim(name: str, value: Any) -> int:
    """Arctic writes dims as strings ("512"); "512.512" stacks layers, which we do not build."""
    if isinstance(value, str):
        if "." in value:
            raise ConfigError(f"speculator config: {name}={value!r} stacks layers; only single-layer dims are supported")
        try:
            value = int(value)
        except ValueError:
            raise ConfigError(f"speculator config: {name} must be an int, got {value!r}") from None
    return _positive_int(name, value)


def _check_keys(raw: Mapping[str, Any], fields: frozenset[str], required: frozenset[str], fmt: str) -> None:
    missing = sorted(required - raw.keys())
    if missing:
        raise ConfigError(f"{fmt} config lacks required field(s): {', '.join(missing)}")
    unknown = sorted(raw.keys() - fields - _FORMAT_METADATA - _pretrained_defaults())
    if unknown:
        raise ConfigError(f"{fmt} config has unknown field(s): {', '.join(unknown)}; known: {', '.join(sorted(fields))}")
    model_type = raw.get("model_type", MODEL_TYPE)
    if model_type != MODEL_TYPE:
        raise ConfigError(f"{fmt} config: model_type is {model_type!r}, expected {MODEL_TYPE!r}")


@attrs.frozen
class MLPSpeculatorConfig:
    emb_dim: int
    vocab_size: int
    n_predict: int
    inner_dim: int = 0  # 0: the same as emb_dim
    tie_weights: bool = False
    scale_input: bool = False
    base_model_name_or_path: str | None = None

    FIELDS = frozenset({"emb_dim", "vocab_size", "n_predict", "inner_dim", "tie_weights", "scale_input"})
    REQUIRED = frozenset({"emb_dim", "vocab_size", "n_predict"})

    def __attrs_post_init__(self) -> None:
        for name in ("emb_dim", "vocab_size", "n_predict"):
            _positive_int(name, getattr(self, name))
        if isinstance(self.inner_dim, bool) or not isinstance(self.inner_dim, int) or self.inner_dim < 0:
            raise ConfigError(f"speculator config: inner_dim must be an int >= 0, got {self.inner_dim!r}")
        _flag("tie_weights", self.tie_weights)
        _flag("scale_input", self.scale_input)
        if self.tie_weights and self.n_predict < 2:
            raise ConfigError("speculator config: tie_weights needs n_predict >= 2 (there is nothing to tie)")

    @property
    def width(self) -> int:
        return self.inner_dim or self.emb_dim

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> MLPSpeculatorConfig:
        _check_keys(raw, cls.FIELDS, cls.REQUIRED, "MLPSpeculator")
        values = {k: raw[k] for k in cls.FIELDS if k in raw}
        return cls(**values, base_model_name_or_path=raw.get("base_model_name_or_path"))

    def to_json(self, torch_dtype: str = "bfloat16") -> dict[str, Any]:
        out: dict[str, Any] = {
            "architectures": [MLP_ARCH],
            "model_type": MODEL_TYPE,
            "emb_dim": self.emb_dim,
            "inner_dim": self.inner_dim,
            "vocab_size": self.vocab_size,
            "n_predict": self.n_predict,
            "tie_weights": self.tie_weights,
            "scale_input": self.scale_input,
            # vLLM's config asserts one entry per head (its default [5, 4, 3] fits only n_predict=3).
            "top_k_tokens_per_head": [1] * self.n_predict,
            "n_candidates": self.n_predict,
            "torch_dtype": torch_dtype,
        }
        if self.base_model_name_or_path is not None:
            out["base_model_name_or_path"] = self.base_model_name_or_path
        return out


@attrs.frozen
class LSTMSpeculatorConfig:
    input_hidden_dim: int
    vocab_size: int
    n_predict: int
    inner_dim: int
    emb_dim: int = 0  # 0: inner_dim
    proj_dim: int = 0  # 0: inner_dim
    method: Literal["sum_lstm", "sum_rnn"] = "sum_lstm"
    tie_weights: bool = True
    tie_lstm_embs: bool = True
    scale_input: bool = False
    base_model_name_or_path: str | None = None

    FIELDS = frozenset({"input_hidden_dim", "vocab_size", "n_predict", "inner_dim", "emb_dim", "proj_dim",
                        "method", "tie_weights", "tie_lstm_embs", "scale_input"})
    REQUIRED = frozenset({"input_hidden_dim", "vocab_size", "n_predict", "inner_dim", "emb_dim", "proj_dim"})

    def __attrs_post_init__(self) -> None:
        for name in ("input_hidden_dim", "vocab_size", "n_predict", "inner_dim"):
            _positive_int(name, getattr(self, name))
        for name in ("emb_dim", "proj_dim"):
            if getattr(self, name) == 0:
                object.__setattr__(self, name, self.inner_dim)  # frozen: settle the default once
        for name in ("tie_weights", "tie_lstm_embs", "scale_input"):
            _flag(name, getattr(self, name))
        if self.method not in METHODS:
            raise ConfigError(f"speculator config: method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if {self.emb_dim, self.proj_dim} != {self.inner_dim}:
            # Embeddings and projections are summed, then normed at inner_dim.
            raise ConfigError(f"speculator config: emb_dim ({self.emb_dim}), proj_dim ({self.proj_dim}) and "
                              f"inner_dim ({self.inner_dim}) must be equal")
        if self.method == "sum_lstm" and not self.tie_weights:
            raise ConfigError("speculator config: method sum_lstm needs tie_weights true (Arctic builds it only tied)")

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> LSTMSpeculatorConfig:
        _check_keys(raw, cls.FIELDS, cls.REQUIRED, "Arctic LSTM speculator")
        values = {k: raw[k] for k in cls.FIELDS if k in raw}
        for name in ("inner_dim", "emb_dim", "proj_dim"):
            values[name] = _dim(name, values[name])
        values.setdefault("method", "sum_rnn")  # Arctic's default when the key is absent
        values.setdefault("tie_weights", False)
        values.setdefault("tie_lstm_embs", False)
        return cls(**values, base_model_name_or_path=raw.get("base_model_name_or_path"))

    def to_json(self, torch_dtype: str = "bfloat16") -> dict[str, Any]:
        out: dict[str, Any] = {
            "architectures": [LSTM_ARCH],
            "model_type": MODEL_TYPE,
            "method": self.method,
            "input_hidden_dim": self.input_hidden_dim,
            "inner_dim": str(self.inner_dim),
            "emb_dim": str(self.emb_dim),
            "proj_dim": str(self.proj_dim),
            "vocab_size": self.vocab_size,
            "n_predict": self.n_predict,
            "tie_weights": self.tie_weights,
            "tie_lstm_embs": self.tie_lstm_embs,
            "scale_input": self.scale_input,
            "top_k_tokens_per_head": [1] * self.n_predict,
            "n_candidates": self.n_predict,
            "torch_dtype": torch_dtype,
        }
        if self.base_model_name_or_path is not None:
            out["base_model_name_or_path"] = self.base_model_name_or_path
        return out


SpeculatorConfig = MLPSpeculatorConfig | LSTMSpeculatorConfig


def parse_config(raw: Any) -> SpeculatorConfig:
    """A config.json's contents -> the config of the format it is in (by architectures, else by
    its LSTM-only fields)."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"speculator config must be a JSON object, got {type(raw).__name__}")
    archs = raw.get("architectures") or []
    archs = [archs] if isinstance(archs, str) else list(archs)  # Arctic's MLP config writes a bare string
    if LSTM_ARCH in archs or (MLP_ARCH not in archs and ("method" in raw or "input_hidden_dim" in raw)):
        return LSTMSpeculatorConfig.from_json(raw)
    if archs and MLP_ARCH not in archs:
        raise ConfigError(f"not a speculator config: architectures {archs}; expected {MLP_ARCH} or {LSTM_ARCH}")
    return MLPSpeculatorConfig.from_json(raw)
