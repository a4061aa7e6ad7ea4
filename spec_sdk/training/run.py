"""One speculator training run end to end: data, training, evaluation, checkpoint, report."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import attrs
import torch

from spec_sdk.speculators import LSTMSpeculatorConfig, MLPSpeculatorConfig, Speculator, build, save_speculator
from spec_sdk.training import data as rollouts
from spec_sdk.training.evaluate import baselines, head_accuracy
from spec_sdk.training.loop import train
from spec_sdk.training.recipe import TrainConfig

REPORT = "train.json"


def speculator_for(config: TrainConfig, hidden_size: int, vocab_size: int, base: str | None) -> Speculator:
    if config.arch == "mlp":
        return build(MLPSpeculatorConfig(
            emb_dim=hidden_size, vocab_size=vocab_size, n_predict=config.n_predict, inner_dim=config.inner_dim,
            tie_weights=config.tie_weights, scale_input=config.scale_input, base_model_name_or_path=base,
        ), seed=config.seed)
    return build(LSTMSpeculatorConfig(
        input_hidden_dim=hidden_size, vocab_size=vocab_size, n_predict=config.n_predict, inner_dim=config.inner_dim,
        emb_dim=config.inner_dim, proj_dim=config.inner_dim, method="sum_lstm", tie_weights=True,
        tie_lstm_embs=True, scale_input=config.scale_input, base_model_name_or_path=base,
    ), seed=config.seed)


def _as_saved(spec: Speculator) -> Speculator:
    """The speculator as its checkpoint holds it (bf16 weights), computing in float32."""
    saved = build(spec.config, seed=None)
    saved.load_state_dict(spec.state_dict())
    return saved.to(torch.bfloat16).float().eval()


def run(target: Path, out: Path, config: TrainConfig, *, work: Path | None = None, progress: bool = True,
        aliases: bool = False, stop_at: int | None = None, log: Any = print, name: str | None = None) -> dict[str, Any]:
    """Train a speculator for the target in `target` (a model directory) into `out`; returns the
    report also written to `out/train.json`. `work` (default `out/.work`, removed on success)
    holds the rollouts and the training checkpoint; a run started again resumes from them.
    `name`: how the checkpoint names its target (`base_model_name_or_path`; default the path)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    keep_work = work is not None
    work = work if work is not None else out / ".work"
    model = AutoModelForCausalLM.from_pretrained(str(target), dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(target))
    t0 = time.perf_counter()
    train_chunks, heldout_chunks = rollouts.prompt_chunks(tokenizer, config)
    train_data = rollouts.build_rollouts(model, train_chunks, config, work, rollouts.fingerprint(target, config, "train"),
                                         desc="rollouts train", progress=progress)
    heldout = rollouts.build_rollouts(model, heldout_chunks, config, work, rollouts.fingerprint(target, config, "heldout"),
                                      greedy_only=True, desc="rollouts held-out", progress=progress)
    data_seconds = time.perf_counter() - t0
    hidden_size = int(model.config.hidden_size)
    lm_head = model.get_output_embeddings().weight.detach()
    name = name or str(target)
    spec = speculator_for(config, hidden_size, int(lm_head.shape[0]), name)
    t0 = time.perf_counter()
    spec = train(spec, train_data, config, work, lm_head, progress=progress, stop_at=stop_at,
                 desc=f"train {config.arch}")
    train_seconds = time.perf_counter() - t0
    quality = head_accuracy(_as_saved(spec), heldout)
    base = baselines(train_data, heldout, config.n_predict, config.use_prompt)
    save_speculator(spec, out, aliases=aliases)
    report = {
        "arch": config.arch,
        "target": name,
        "config": attrs.asdict(config),
        "params": sum(p.numel() for p in spec.parameters()),
        "checkpoint_bytes": (out / "model.safetensors").stat().st_size,
        "data": {"train_sequences": len(train_data), "heldout_sequences": len(heldout),
                 "sequence_length": int(train_data.tokens.shape[1]), "seconds": round(data_seconds, 1)},
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "heldout": quality,
        "baselines_head0": base,
        "torch_threads": torch.get_num_threads(),
    }
    (out / REPORT).write_text(json.dumps(report, indent=2) + "\n")
    log(format_report(report))
    if not keep_work and stop_at is None:
        shutil.rmtree(work, ignore_errors=True)
    return report


def format_report(report: dict[str, Any]) -> str:
    q, b = report["heldout"], report["baselines_head0"]
    heads = " ".join(f"{a:.3f}" for a in q["head_accuracy"])
    accept = " ".join(f"{a:.3f}" for a in q["accept_at"])
    return (f"[train-speculator] {report['arch']}: held-out per-head accuracy {heads} "
            f"(head 0 baselines: unigram {b['unigram']:.3f}, bigram {b['bigram']:.3f}); free-running drafts: "
            f"{q['accepted_mean']:.2f} tokens accepted of {len(q['head_accuracy'])}, all of the first j+1 "
            f"right {accept}; {q['positions']} positions; {report['params']} parameters, "
            f"{report['checkpoint_bytes'] / 1e6:.1f} MB; data {report['data']['seconds']:.0f}s, "
            f"training {report['train_seconds']:.0f}s")
