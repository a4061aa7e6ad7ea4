"""MLP and LSTM speculator modules and their checkpoints: the published formulas, the published
config and tensor names, save/load round trips, and clear errors for configs that do not fit."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors.torch import load_file, save_file

from spec_sdk.errors import ConfigError
from spec_sdk.speculators import (
    LSTMSpeculator,
    LSTMSpeculatorConfig,
    MLPSpeculator,
    MLPSpeculatorConfig,
    build,
    load_speculator,
    parse_config,
    read_config,
    resolve_checkpoint,
    save_speculator,
)

torch.set_num_threads(1)

CONFIGS = {
    "mlp": MLPSpeculatorConfig(emb_dim=32, vocab_size=64, n_predict=3, inner_dim=16),
    "mlp-tied-scaled": MLPSpeculatorConfig(emb_dim=32, vocab_size=64, n_predict=4, inner_dim=16, tie_weights=True,
                                           scale_input=True),
    "lstm": LSTMSpeculatorConfig(input_hidden_dim=32, vocab_size=64, n_predict=3, inner_dim=16, emb_dim=16, proj_dim=16),
    "lstm-untied-embs": LSTMSpeculatorConfig(input_hidden_dim=32, vocab_size=64, n_predict=3, inner_dim=16,
                                             tie_lstm_embs=False, scale_input=True),
    "rnn": LSTMSpeculatorConfig(input_hidden_dim=32, vocab_size=64, n_predict=3, inner_dim=16, method="sum_rnn",
                                tie_weights=False),
    "rnn-tied": LSTMSpeculatorConfig(input_hidden_dim=32, vocab_size=64, n_predict=3, inner_dim=16, method="sum_rnn"),
}


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(6, 32, generator=g), torch.randint(0, 64, (6,), generator=g)


def _rms(x: torch.Tensor) -> torch.Tensor:
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


def test_mlp_step_is_ibms_formula() -> None:
    """fms-extras: state = proj(state) * sw + emb(tok) * sqrt(1 - sw^2) * sqrt(inner/2), norm, GELU;
    ours adds the embedding scaled by emb_weight / state_weight instead (as vLLM does), which the
    scale-free norm makes the same function."""
    spec = MLPSpeculator(CONFIGS["mlp-tied-scaled"], seed=3)
    with torch.no_grad():
        for p in spec.ln[0].parameters():
            p.add_(torch.randn(p.shape) * 0.1)  # a non-trivial norm affine
    hidden, tokens = _inputs()
    n, inner = 4, 16
    sw = 0.5 ** (0.5 / n)
    state = _rms(hidden) / math.sqrt(2)  # scale_input: ln0 without affine, then / sqrt 2
    carry = spec.start(hidden)
    for i in range(n):
        z = spec.emb[i](tokens) * math.sqrt(1 - sw**2) * math.sqrt(inner / 2)
        pre = spec.proj[i](state) * sw + z
        state = torch.nn.functional.gelu(spec.ln[i].weight * _rms(pre) + spec.ln[i].bias)
        carry = spec.step(carry, tokens, i)
        torch.testing.assert_close(carry, state, rtol=1e-4, atol=1e-5)
        tokens = spec.logits(carry, i).argmax(-1)


def test_lstm_step_is_arctics_formula() -> None:
    cfg = CONFIGS["lstm"]
    spec = LSTMSpeculator(cfg, seed=5)
    hidden, tokens = _inputs(1)
    n, inner = cfg.n_predict, cfg.inner_dim
    sw = 0.5 ** (0.5 / n)
    alpha = math.sqrt((1 - sw**2) * inner / 2) / sw
    h, c = hidden, torch.zeros(6, inner)
    carry = spec.start(hidden)
    for i in range(n):
        p = 0 if i == 0 else 1
        emb = alpha * spec.forget_emb[0](tokens)  # tie_lstm_embs: one embedding for all four
        gate = {g: getattr(spec, f"{g}_proj")[p](h) + emb for g in ("forget", "input", "cell", "output")}
        gelu, cell_ln, state_ln = torch.nn.functional.gelu, spec.cell_ln[0], spec.state_ln[0]
        cand = gelu(cell_ln.weight * _rms(gate["cell"]) + cell_ln.bias)
        c = c * torch.sigmoid(gate["forget"]) + cand * torch.sigmoid(gate["input"])
        h = gelu(state_ln.weight * _rms(c) + state_ln.bias) * torch.sigmoid(gate["output"])
        carry = spec.step(carry, tokens, i)
        torch.testing.assert_close(carry[0], h, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(carry[1], c, rtol=1e-4, atol=1e-5)
        tokens = spec.logits(carry, i).argmax(-1)


def test_teacher_forced_matches_stepwise() -> None:
    """Training's whole-sequence pass computes what drafting does one position at a time."""
    for cfg in CONFIGS.values():
        spec = build(cfg, seed=2)
        g = torch.Generator().manual_seed(0)
        hidden = torch.randn(2, 5, 32, generator=g)
        inputs = torch.randint(0, 64, (2, 5 + cfg.n_predict), generator=g)
        heads = list(spec.teacher_forced(hidden, inputs))
        for t in range(5):
            carry = spec.start(hidden[:, t])
            for i in range(cfg.n_predict):
                carry = spec.step(carry, inputs[:, t + i], i)
                torch.testing.assert_close(spec.logits(carry, i), heads[i][:, t], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(CONFIGS))
@pytest.mark.parametrize("aliases", [False, True])
def test_round_trip_identical_outputs(name, aliases, tmp_path) -> None:
    spec = build(CONFIGS[name], seed=7)
    save_speculator(spec, tmp_path, dtype=torch.float32, aliases=aliases)
    back = load_speculator(tmp_path)
    assert type(back) is type(spec) and back.config == spec.config
    hidden, tokens = _inputs()
    for a, b in zip(spec.draft(hidden, tokens, spec.n_predict), back.draft(hidden, tokens, spec.n_predict)):
        assert torch.equal(a, b)
    for (n1, p1), (n2, p2) in zip(spec.state_dict().items(), back.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2)


def test_bf16_checkpoint_rounds_weights_only(tmp_path) -> None:
    spec = build(CONFIGS["mlp"], seed=1)
    save_speculator(spec, tmp_path)  # bf16 by default
    back = load_speculator(tmp_path)
    for (_, a), (_, b) in zip(spec.named_parameters(), back.named_parameters()):
        assert torch.equal(a.to(torch.bfloat16).float(), b)
    assert json.loads((tmp_path / "config.json").read_text())["torch_dtype"] == "bfloat16"


def test_published_config_fields_and_tensor_names(tmp_path) -> None:
    save_speculator(build(CONFIGS["mlp-tied-scaled"]), tmp_path / "mlp")
    cfg = json.loads((tmp_path / "mlp" / "config.json").read_text())
    assert cfg["architectures"] == ["MLPSpeculatorPreTrainedModel"] and cfg["model_type"] == "mlp_speculator"
    assert {k: cfg[k] for k in ("n_predict", "emb_dim", "inner_dim", "vocab_size", "tie_weights", "scale_input")} == {
        "n_predict": 4, "emb_dim": 32, "inner_dim": 16, "vocab_size": 64, "tie_weights": True, "scale_input": True}
    assert len(cfg["top_k_tokens_per_head"]) == 4  # vLLM's MLPSpeculatorConfig asserts this
    # Tied tensors once, under the names vLLM's loader finds after stripping "speculator."
    assert sorted(load_file(str(tmp_path / "mlp" / "model.safetensors"))) == [
        "speculator.emb.0.weight", "speculator.head.0.weight", "speculator.ln.0.bias", "speculator.ln.0.weight",
        "speculator.proj.0.weight", "speculator.proj.1.weight"]
    save_speculator(build(CONFIGS["lstm"]), tmp_path / "lstm", aliases=True)
    cfg = json.loads((tmp_path / "lstm" / "config.json").read_text())
    assert cfg["architectures"] == ["ArcticLSTMSpeculatorPreTrainedModel"] and cfg["method"] == "sum_lstm"
    assert (cfg["inner_dim"], cfg["emb_dim"], cfg["proj_dim"], cfg["input_hidden_dim"]) == ("16", "16", "16", 32)
    names = set(load_file(str(tmp_path / "lstm" / "model.safetensors")))
    # What Arctic's vLLM loader pops and fuses for sum_lstm with tie_lstm_embs.
    for gate in ("forget", "input", "cell", "output"):
        assert {f"{gate}_emb.0.weight", f"{gate}_proj.0.weight", f"{gate}_proj.1.weight"} <= names
    assert {"cell_ln.0.weight", "cell_ln.0.bias", "state_ln.0.weight", "state_ln.0.bias", "head.0.weight"} <= names


def test_loads_hf_wrapper_checkpoints_with_every_tied_name(tmp_path) -> None:
    """IBM's Hugging Face wrapper saves the module as `.speculator`, tied tensors under all names."""
    spec = build(CONFIGS["mlp-tied-scaled"], seed=4)
    tensors = {f"speculator.{k}": v.clone() for k, v in spec.state_dict().items()}
    save_file(tensors, str(tmp_path / "model.safetensors"))
    raw = spec.config.to_json() | {"architectures": "MLPSpeculatorPreTrainedModel",  # Arctic writes a bare string
                                   "transformers_version": "4.44.0", "torch_dtype": "float32", "bos_token_id": None}
    (tmp_path / "config.json").write_text(json.dumps(raw))
    back = load_speculator(tmp_path)
    hidden, tokens = _inputs()
    assert torch.equal(spec.draft(hidden, tokens, 4)[0], back.draft(hidden, tokens, 4)[0])


def _write_config(path, raw) -> None:
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps(raw))


@pytest.mark.parametrize("change, message", [
    ({"n_predicts": 3}, "unknown field"),
    ({"emb_dim": None}, "required"),
    ({"vocab_size": None}, "required"),
    ({"n_predict": 0}, "n_predict"),
    ({"tie_weights": "yes"}, "tie_weights"),
    ({"model_type": "llama"}, "model_type"),
])
def test_bad_mlp_config_is_a_clear_error(change, message, tmp_path) -> None:
    raw = CONFIGS["mlp"].to_json() | change
    raw = {k: v for k, v in raw.items() if v is not None}
    _write_config(tmp_path, raw)
    with pytest.raises(ConfigError, match=message):
        read_config(tmp_path)


@pytest.mark.parametrize("change, message", [
    ({"method": "sum_gru"}, "method"),
    ({"proj_dim": None}, "required"),
    ({"input_hidden_dim": None}, "required"),
    ({"inner_dim": "16.16"}, "stacks layers"),
    ({"emb_dim": "8"}, "must be equal"),
    ({"tie_weights": False}, "tie_weights"),
    ({"lstm_layers": 2}, "unknown field"),
])
def test_bad_lstm_config_is_a_clear_error(change, message, tmp_path) -> None:
    raw = CONFIGS["lstm"].to_json() | change
    raw = {k: v for k, v in raw.items() if v is not None}
    _write_config(tmp_path, raw)
    with pytest.raises(ConfigError, match=message):
        read_config(tmp_path)


def test_arctic_defaults_when_fields_are_absent() -> None:
    cfg = parse_config({"input_hidden_dim": 32, "inner_dim": "16", "emb_dim": "16", "proj_dim": "16",
                        "vocab_size": 64, "n_predict": 2})
    assert isinstance(cfg, LSTMSpeculatorConfig)
    assert (cfg.method, cfg.tie_weights, cfg.tie_lstm_embs, cfg.inner_dim) == ("sum_rnn", False, False, 16)
    assert isinstance(parse_config({"emb_dim": 32, "vocab_size": 64, "n_predict": 2}), MLPSpeculatorConfig)
    with pytest.raises(ConfigError, match="architectures"):
        parse_config({"architectures": ["LlamaForCausalLM"], "emb_dim": 32, "vocab_size": 64, "n_predict": 2})


def test_checkpoint_that_does_not_fit_its_config(tmp_path) -> None:
    spec = build(CONFIGS["mlp"], seed=0)
    save_speculator(spec, tmp_path)
    bigger = CONFIGS["mlp"].to_json() | {"inner_dim": 24}
    (tmp_path / "config.json").write_text(json.dumps(bigger))
    with pytest.raises(ConfigError, match="shape"):
        load_speculator(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(CONFIGS["mlp"].to_json() | {"n_predict": 4}))
    with pytest.raises(ConfigError, match="lacks"):
        load_speculator(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(CONFIGS["mlp"].to_json() | {"n_predict": 2}))
    with pytest.raises(ConfigError, match="not in"):
        load_speculator(tmp_path)
    with pytest.raises(ConfigError, match="config.json is missing"):
        load_speculator(tmp_path / "nowhere")


def test_resolve_checkpoint_finds_siblings_and_zoo_dirs(tmp_path) -> None:
    (tmp_path / "target").mkdir()
    (tmp_path / "target" / "config.json").write_text(json.dumps({"model_type": "llama"}))
    save_speculator(build(CONFIGS["mlp"]), tmp_path / "mlp")
    save_speculator(build(CONFIGS["lstm"]), tmp_path / "lstm")
    assert resolve_checkpoint(tmp_path / "target", "mlp") == tmp_path / "mlp"
    assert resolve_checkpoint(tmp_path, "lstm") == tmp_path / "lstm"
    assert resolve_checkpoint(tmp_path / "lstm", "lstm") == tmp_path / "lstm"
    with pytest.raises(ConfigError, match="not an mlp"):
        resolve_checkpoint(tmp_path / "lstm", "mlp")
    with pytest.raises(ConfigError, match="no mlp speculator"):
        resolve_checkpoint(tmp_path / "nowhere" / "target", "mlp")


def test_building_leaves_the_global_rng_alone() -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    for cfg in CONFIGS.values():
        build(cfg, seed=1)
    assert torch.equal(torch.rand(3), expected)
