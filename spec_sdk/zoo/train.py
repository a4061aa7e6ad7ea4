"""Training one zoo model: deterministic, resumable, with a progress bar.

The data is a tensor of token blocks (`[n_blocks, context]`, documents packed back to back).
Which blocks make up step `s` is a pure function of `(seed, s)`, the learning rate is a pure
function of `s`, and there is no dropout, so the only state is the weights, the optimizer and
the step: a checkpoint of those resumes a run to the same bits as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import LlamaConfig, LlamaForCausalLM

from spec_sdk.zoo.precision import bf16_autocast
from spec_sdk.zoo.variants import ModelSpec

CKPT_NAME = "ckpt.pt"
MIN_LR_RATIO = 0.1


def lr_at(spec: ModelSpec, step: int) -> float:
    """Linear warmup, then cosine decay to MIN_LR_RATIO of the peak at the last step."""
    if step < spec.warmup:
        return spec.lr * (step + 1) / spec.warmup
    progress = (step - spec.warmup) / max(1, spec.steps - spec.warmup)
    return spec.lr * (MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress))))


def batch_indices(n_blocks: int, batch_size: int, step: int, seed: int) -> torch.Tensor:
    """Block ids of one step: consecutive slices of per-epoch seeded permutations."""
    first = step * batch_size
    out = []
    for pos in range(first, first + batch_size):
        epoch, offset = divmod(pos, n_blocks)
        out.append(int(_permutation(n_blocks, seed, epoch)[offset]))
    return torch.tensor(out, dtype=torch.long)


_perm_cache: dict[tuple[int, int, int], torch.Tensor] = {}


def _permutation(n: int, seed: int, epoch: int) -> torch.Tensor:
    key = (n, seed, epoch)
    if key not in _perm_cache:
        gen = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        _perm_cache.clear()  # only the current epoch (and the next) are ever needed
        _perm_cache[key] = torch.randperm(n, generator=gen)
    return _perm_cache[key]


def new_model(config: LlamaConfig, seed: int) -> LlamaForCausalLM:
    torch.manual_seed(seed)  # the initial weights depend on nothing else
    return LlamaForCausalLM(config).float()


def _optimizer(model: torch.nn.Module, spec: ModelSpec) -> torch.optim.AdamW:
    # No weight decay on norms (1-D); decay matrices and embeddings.
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=spec.lr, betas=(0.9, 0.95), eps=1e-8)


def _fingerprint(config: LlamaConfig, spec: ModelSpec, seed: int, blocks: torch.Tensor) -> str:
    """Identifies a run, so a checkpoint is only resumed by the run that wrote it."""
    h = hashlib.sha256()
    h.update(json.dumps(config.to_dict(), sort_keys=True, default=str).encode())
    h.update(repr((spec, seed, tuple(blocks.shape))).encode())
    h.update(blocks.numpy().tobytes())
    return h.hexdigest()


def save_checkpoint(path: Path, step: int, model: torch.nn.Module, opt: torch.optim.Optimizer, fingerprint: str) -> None:
    """Model, optimizer and step, tagged with the run's fingerprint (zoo and speculator training)."""
    tmp = path.with_suffix(".tmp")
    torch.save({"step": step, "model": model.state_dict(), "optimizer": opt.state_dict(), "fingerprint": fingerprint}, tmp)
    os.replace(tmp, path)  # atomic: a kill mid-save leaves the previous checkpoint intact


def load_checkpoint(path: Path, fingerprint: str, model: torch.nn.Module, opt: torch.optim.Optimizer) -> int:
    """Restore a checkpoint of the same run (same fingerprint) into `model` and `opt`; returns
    the step to resume from, 0 when there is none or it belongs to another run."""
    if not path.exists():
        return 0
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if ckpt["fingerprint"] != fingerprint:
        return 0
    model.load_state_dict(ckpt["model"])
    opt.load_state_dict(ckpt["optimizer"])
    return int(ckpt["step"])


def train_model(
    config: LlamaConfig,
    spec: ModelSpec,
    blocks: torch.Tensor,
    work_dir: Path,
    seed: int,
    *,
    stop_at: int | None = None,
    desc: str = "train",
    progress: bool = True,
) -> LlamaForCausalLM:
    """Train (or continue training) a model for `spec.steps` steps; returns it in float32.

    A checkpoint in `work_dir` from the same run is resumed. `stop_at` ends the run early after
    that step with a checkpoint, as an interruption would.
    """
    work_dir.mkdir(parents=True, exist_ok=True)
    ckpt_path = work_dir / CKPT_NAME
    fingerprint = _fingerprint(config, spec, seed, blocks)
    model = new_model(config, seed)
    opt = _optimizer(model, spec)
    step = load_checkpoint(ckpt_path, fingerprint, model, opt)
    end = spec.steps if stop_at is None else min(stop_at, spec.steps)
    model.train()
    bar = tqdm(total=spec.steps, initial=step, desc=desc, disable=not progress, dynamic_ncols=True, mininterval=1.0)
    while step < end:
        lr = lr_at(spec, step)
        for group in opt.param_groups:
            group["lr"] = lr
        batch = blocks[batch_indices(len(blocks), spec.batch_size, step, seed)].long()
        # bf16 autocast where the CPU has bf16 units (several times faster than fp32 there,
        # several times slower where bf16 is emulated: spec_sdk.zoo.precision)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16_autocast()):
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", lr=f"{lr:.2e}")
        if step % spec.checkpoint_every == 0 or step == end:
            save_checkpoint(ckpt_path, step, model, opt, fingerprint)
    bar.close()
    model.eval()
    return model


@torch.no_grad()
def heldout_loss(model: torch.nn.Module, blocks: torch.Tensor, batch_size: int = 8) -> float:
    """Mean next-token cross-entropy (nats) over held-out blocks, in float32."""
    if len(blocks) == 0:
        return float("nan")
    total, count = 0.0, 0
    for i in range(0, len(blocks), batch_size):
        batch = blocks[i : i + batch_size].long()
        n = batch.numel() - batch.shape[0]  # predictions per block: context - 1
        total += model(input_ids=batch, labels=batch).loss.item() * n
        count += n
    return total / count
