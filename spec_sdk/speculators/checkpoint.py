"""Speculator checkpoints on disk: `config.json` in the published format and the weights in
`model.safetensors` under the published tensor names.

Reading accepts what the publishers write: names with or without the `speculator.` prefix (IBM's
Hugging Face wrapper keeps the module as `.speculator`; vLLM strips the prefix), tied tensors
under one name or under every name (a saved `state_dict` repeats them), and
`pytorch_model.bin` when there is no safetensors file. A tensor the config does not explain, a
missing one or a wrong shape is a `ConfigError`: such a checkpoint was made for another config.

Writing: MLP names carry the `speculator.` prefix (what IBM's wrapper loads, and vLLM strips),
LSTM names do not (Arctic's loader looks them up bare). A tied tensor is written once unless
`aliases=True`, which writes it under every name, as Arctic's vLLM loader expects for an LSTM
with `tie_lstm_embs` (it reads `input_emb.0.weight` etc. even though they equal `forget_emb`).
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from spec_sdk.errors import ConfigError
from spec_sdk.speculators.base import Speculator
from spec_sdk.speculators.config import (
    MODEL_TYPE,
    LSTMSpeculatorConfig,
    MLPSpeculatorConfig,
    SpeculatorConfig,
    parse_config,
)
from spec_sdk.speculators.lstm import LSTMSpeculator
from spec_sdk.speculators.mlp import MLPSpeculator

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
PREFIX = "speculator."
ARCHS = {"mlp": "mlp", "lstm": "lstm"}  # the zoo's subdirectory per architecture


def build(config: SpeculatorConfig, seed: int | None = 0) -> Speculator:
    """A freshly initialised speculator for `config`."""
    if isinstance(config, MLPSpeculatorConfig):
        return MLPSpeculator(config, seed)
    if isinstance(config, LSTMSpeculatorConfig):
        return LSTMSpeculator(config, seed)
    raise ConfigError(f"not a speculator config: {config!r}")


def read_config(path: str | Path) -> SpeculatorConfig:
    file = Path(path) / CONFIG
    try:
        raw = json.loads(file.read_text())
    except FileNotFoundError:
        raise ConfigError(f"no speculator checkpoint at {path}: {CONFIG} is missing") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{file} is not valid JSON: {exc}") from None
    return parse_config(raw)


def _aliases(model: Speculator) -> dict[str, str]:
    """Every parameter name (tied ones included) -> the name `named_parameters()` lists it under."""
    first: dict[int, str] = {}
    out: dict[str, str] = {}
    for name, param in model.named_parameters(remove_duplicate=False):
        out[name] = first.setdefault(id(param), name)
    return out


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    if (path / WEIGHTS).exists():
        tensors = load_file(str(path / WEIGHTS))
    elif (path / "pytorch_model.bin").exists():
        tensors = torch.load(path / "pytorch_model.bin", map_location="cpu", weights_only=True)
    else:
        raise ConfigError(f"no speculator weights in {path}: expected {WEIGHTS} or pytorch_model.bin")
    return {name.removeprefix(PREFIX): t for name, t in tensors.items()}


def load_speculator(path: str | Path, *, dtype: torch.dtype = torch.float32,
                    device: str | torch.device | None = None) -> Speculator:
    """The speculator saved in directory `path`, in eval mode."""
    path = Path(path)
    model = build(read_config(path), seed=None)
    aliases = _aliases(model)
    params = dict(model.named_parameters())
    tensors = _read_tensors(path)
    unknown = sorted(set(tensors) - set(aliases))
    if unknown:
        raise ConfigError(f"{path}: tensors {unknown[:6]}{' ...' if len(unknown) > 6 else ''} are not in a "
                          f"{type(model).__name__} with this config")
    loaded: set[str] = set()
    with torch.no_grad():
        # The primary name first, so an alias only fills a tensor saved under no other name.
        for name in sorted(tensors, key=lambda n: aliases[n] != n):
            target = aliases[name]
            if target in loaded:
                continue
            param, value = params[target], tensors[name]
            if tuple(value.shape) != tuple(param.shape):
                raise ConfigError(f"{path}: {name} has shape {tuple(value.shape)}, the config needs {tuple(param.shape)}")
            param.copy_(value.to(param.dtype))
            loaded.add(target)
    missing = sorted(set(params) - loaded)
    if missing:
        raise ConfigError(f"{path}: the checkpoint lacks {missing}")
    return model.to(dtype=dtype, device=device).eval()


def save_speculator(model: Speculator, path: str | Path, *, dtype: torch.dtype = torch.bfloat16,
                    aliases: bool = False) -> Path:
    """Write `model` to directory `path` (created) as config.json + model.safetensors."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    prefix = PREFIX if isinstance(model, MLPSpeculator) else ""
    names = _aliases(model) if aliases else {n: n for n, _ in model.named_parameters()}
    params = dict(model.named_parameters())
    # Each name gets its own copy: safetensors refuses tensors that share memory.
    tensors = {prefix + name: params[primary].detach().to("cpu", dtype).clone().contiguous()
               for name, primary in names.items()}
    save_file(tensors, str(path / WEIGHTS), metadata={"format": "pt"})
    (path / WEIGHTS).chmod(0o644)  # safetensors writes through a private (0600) temp file
    dtype_name = str(dtype).removeprefix("torch.")
    (path / CONFIG).write_text(json.dumps(model.config.to_json(dtype_name), indent=2) + "\n")
    return path


def resolve_checkpoint(path: str | Path, arch: str) -> Path:
    """Where the `arch` speculator ("mlp" or "lstm") is, given its own directory, a zoo directory
    (`<zoo>/<arch>`), the target's directory (its sibling `<arch>`), or a zoo variant name."""
    if arch not in ARCHS:
        raise ConfigError(f"speculator arch must be one of {', '.join(ARCHS)}, got {arch!r}")
    if isinstance(path, str) and not Path(path).exists():
        from spec_sdk.zoo.variants import VARIANTS

        if path in VARIANTS:
            from spec_sdk.zoo.build import default_zoo_dir

            path = default_zoo_dir(path)
    base = Path(path)
    kind = _kind(base)
    if kind is not None:
        if kind != arch:
            raise ConfigError(f"{base} holds an {kind} speculator, not an {arch} one")
        return base
    for candidate in (base / ARCHS[arch], base.parent / ARCHS[arch]):
        if _kind(candidate) == arch:
            return candidate
    raise ConfigError(f"no {arch} speculator at {base} (looked in it, in {base / ARCHS[arch]} and in "
                      f"{base.parent / ARCHS[arch]}); train one with `spec-sdk train-speculator`")


def _kind(path: Path) -> str | None:
    """"mlp" or "lstm" when `path` holds a speculator config, None when it holds none (no file, or
    another model's). A speculator config that does not parse raises its ConfigError."""
    try:
        raw = json.loads((path / CONFIG).read_text())
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(raw, dict) or raw.get("model_type") != MODEL_TYPE:
        return None
    return "lstm" if isinstance(parse_config(raw), LSTMSpeculatorConfig) else "mlp"
