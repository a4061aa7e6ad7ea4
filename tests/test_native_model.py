"""The native forward computes what transformers computes: zoo checkpoints loaded from disk, random
Llamas with GQA, tied and untied heads, biases, Llama-3 and linear rope scaling; float32 within
float32 tolerance, float64 to rounding."""

from __future__ import annotations

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM

from spec_sdk.backends.base import ScoreItem
from spec_sdk.backends.native import NativeBackend, spec_from_dict
from spec_sdk.backends.native.rope import inv_freq
from spec_sdk.types import Draft
from spec_sdk.zoo.build import default_zoo_dir, resolve


def _random(cls=LlamaForCausalLM, config_cls=LlamaConfig, dtype=torch.float32, seed=0, **overrides):
    fields = dict(
        vocab_size=96, hidden_size=64, intermediate_size=112, num_hidden_layers=2, num_attention_heads=8,
        num_key_value_heads=2, max_position_embeddings=256, initializer_range=0.2, bos_token_id=None,
        eos_token_id=None, pad_token_id=None,
    )
    fields.update(overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(config_cls(**fields))
    return model.to(dtype).eval()


def _hf(model, tokens):
    with torch.inference_mode():
        out = model(torch.tensor([list(tokens)]), use_cache=False, output_hidden_states=True)
    return out.logits[0], out.hidden_states[-1][0]


def _native_full(backend, tokens):
    """Prefill all but the last token, then score the last one with the rest as a chain draft:
    every position's logits from one add + one score."""
    backend.add("x", tokens[:2])
    try:
        (res,) = backend.score([ScoreItem("x", tokens[1], Draft(tokens=tokens[2:]), want_hidden=True)])
    finally:
        backend.remove("x")
    return res.logits, res.hidden


def _check(model, backend, tokens, atol, rtol):
    ref_logits, ref_hidden = _hf(model, tokens)
    logits, hidden = _native_full(backend, tokens)
    torch.testing.assert_close(logits, ref_logits[1:], atol=atol, rtol=rtol)
    torch.testing.assert_close(hidden, ref_hidden[1:], atol=atol, rtol=rtol)


CASES = {
    "gqa-untied": {},
    "gqa-tied": {"tie_word_embeddings": True},
    "mha": {"num_key_value_heads": 8},
    "mqa-bias": {"num_key_value_heads": 1, "attention_bias": True, "mlp_bias": True},
    "llama3-rope": {
        "rope_parameters": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
                            "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
        "head_dim": 16,
    },
    "linear-rope": {"rope_parameters": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0}},
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_random_llamas_match_transformers(case, dtype):
    model = _random(dtype=dtype, **CASES[case])
    backend = NativeBackend(model, max_slots=2)
    assert backend.dtype == dtype
    tokens = torch.randint(0, 96, (150,), generator=torch.Generator().manual_seed(1)).tolist()
    tol = 2e-4 if dtype == torch.float32 else 1e-9
    _check(model, backend, tokens, atol=tol, rtol=tol)


def test_llama3_inverse_frequencies_match_transformers():
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    model = _random(**CASES["llama3-rope"])
    ours = inv_freq(spec_from_dict(model.config.to_dict()))
    theirs, scaling = ROPE_INIT_FUNCTIONS["llama3"](model.config, None)
    assert scaling == 1.0
    torch.testing.assert_close(ours, theirs, atol=0, rtol=0)
    assert not torch.equal(ours, inv_freq(spec_from_dict({**model.config.to_dict(), "rope_parameters": None})))


def test_qwen2_biases_match_transformers():
    model = _random(Qwen2ForCausalLM, Qwen2Config, dtype=torch.float64)
    assert model.model.layers[0].self_attn.q_proj.bias is not None
    backend = NativeBackend(model, max_slots=1)
    assert backend.weights.layers[0].qkv_bias is not None
    _check(model, backend, list(range(3, 60)), atol=1e-9, rtol=1e-9)


@pytest.mark.parametrize("variant", ["tiny", "full"])
def test_zoo_checkpoints_match_transformers(variant):
    if not (default_zoo_dir(variant) / "zoo.json").exists():
        pytest.skip(f"zoo variant {variant} not built")
    path = resolve(variant, "target")
    model = LlamaForCausalLM.from_pretrained(str(path), dtype=torch.float32).eval()
    backend = NativeBackend(path, max_slots=2)  # from config.json + safetensors, not the model object
    assert backend.dtype == torch.float32 and backend.eos_token_ids == (2,)
    assert backend.max_context == model.config.max_position_embeddings
    tokens = torch.randint(0, model.config.vocab_size, (200,), generator=torch.Generator().manual_seed(0)).tolist()
    _check(model, backend, tokens, atol=2e-4, rtol=2e-4)


def test_sharded_checkpoint_loads(tmp_path):
    model = _random(tie_word_embeddings=True)
    model.save_pretrained(tmp_path, max_shard_size="20KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    backend = NativeBackend(tmp_path, max_slots=1)
    assert backend.spec.tie_word_embeddings
    unpacked = NativeBackend(tmp_path, max_slots=1, dtype=torch.float64)
    assert unpacked.weights.head is unpacked.weights.embed  # tied: one tensor
    _check(model, backend, list(range(5, 40)), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(
    "change, error",
    [
        ({"hidden_act": "gelu"}, NotImplementedError),
        ({"model_type": "gpt2"}, NotImplementedError),
        ({"rope_parameters": {"rope_type": "yarn", "rope_theta": 1e4, "factor": 2.0}}, NotImplementedError),
        ({"num_key_value_heads": 3}, ValueError),
    ],
)
def test_unsupported_configs_are_refused(change, error):
    config = {**_random().config.to_dict(), **change}
    with pytest.raises(error):
        spec_from_dict(config)


def test_unknown_tensors_are_refused():
    from spec_sdk.backends.native.weights import load_state_dict

    model = _random()
    state = dict(model.state_dict())
    state["model.layers.0.self_attn.q_norm.weight"] = torch.ones(8)  # a Qwen3-style q norm
    with pytest.raises(NotImplementedError, match="q_norm"):
        load_state_dict(state, spec_from_dict(model.config.to_dict()), torch.float32, torch.device("cpu"))


def test_sliding_window_caps_the_context():
    from transformers import MistralConfig, MistralForCausalLM

    model = _random(MistralForCausalLM, MistralConfig, sliding_window=32)
    backend = NativeBackend(model, max_slots=1)
    assert backend.max_context == 32  # within the window, sliding attention is full attention
    _check(model, backend, list(range(1, 33)), atol=1e-4, rtol=1e-4)
