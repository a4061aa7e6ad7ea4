"""The training loop: every head at once, teacher-forced on the frozen target's hidden states.

Which sequences make step s is a pure function of (seed, s) and the learning rate of s, and
nothing is random besides, so a checkpoint of (weights, optimizer, step) resumes a run to the
same bits as an uninterrupted one (on the same thread count).

Per sequence, position t is used when all heads have a label (t <= L - 2 - n_predict) and, unless
`use_prompt`, only where head 0's label is a generated token (t >= prompt_len - 2). Head i reads
hidden[t] and the true tokens t+1..t+1+i and learns what comes 2+i places after t:
- "hard": the sequence's token there (the reference recipe);
- "argmax": the target's greedy choice there, argmax(lm_head(hidden[t+1+i])): the same token on a
  greedy continuation, but the right label on sampled continuations and on the corpus's own
  prompt text too, where the sequence's token is not what the target would have written;
- "soft": the target's whole distribution there, softmax(lm_head(hidden[t+1+i])).
"""

from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Protocol

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from spec_sdk.speculators import Speculator
from spec_sdk.training.data import Rollouts
from spec_sdk.training.recipe import TrainConfig
from spec_sdk.zoo.train import batch_indices, load_checkpoint, save_checkpoint
from spec_sdk.zoo.precision import bf16_autocast

CKPT = "speculator-ckpt.pt"
MIN_LR_RATIO = 0.1


class Schedule(Protocol):
    """What a learning-rate schedule reads (a TrainConfig, a DraftDistillConfig)."""

    @property
    def lr(self) -> float: ...
    @property
    def warmup(self) -> int: ...
    @property
    def steps(self) -> int: ...


def lr_at(config: Schedule, step: int) -> float:
    """Linear warmup, then cosine decay to MIN_LR_RATIO of the peak at the last step."""
    if step < config.warmup:
        return config.lr * (step + 1) / config.warmup
    progress = min(1.0, (step - config.warmup) / max(1, config.steps - config.warmup))
    return config.lr * (MIN_LR_RATIO + (1 - MIN_LR_RATIO) * 0.5 * (1 + math.cos(math.pi * progress)))


def first_position(prompt_len: int, use_prompt: bool) -> int:
    """The first position trained on: 0, or where head 0's label is the first generated token."""
    return 0 if use_prompt else prompt_len - 2


def head_batch(hidden: Tensor, tokens: Tensor, n_predict: int, t0: int) -> tuple[Tensor, Tensor]:
    """(states `[B, T, H]` at positions t0.., the inputs `[B, T + n]` from token t0+1 on)."""
    length = tokens.shape[1]
    last = length - 2 - n_predict
    return hidden[:, t0 : last + 1], tokens[:, t0 + 1 : length]


def losses(spec: Speculator, hidden: Tensor, tokens: Tensor, config: TrainConfig, lm_head: Tensor | None) -> list[Tensor]:
    """Mean cross-entropy of each head over a batch of sequences."""
    n = spec.n_predict
    states, inputs = head_batch(hidden, tokens, n, first_position(config.prompt_len, config.use_prompt))
    t = states.shape[1]
    target = inputs[:, 1:]  # "hard": head i's labels are slice i
    if config.labels != "hard":
        assert lm_head is not None, f"{config.labels} labels need the target's LM head"
        # The target's logits at positions t0+1 .., once for all heads.
        logits = (hidden[:, -inputs.shape[1] : -1] @ lm_head.T).float()
        target = logits.argmax(-1) if config.labels == "argmax" else torch.softmax(logits, dim=-1)
    out = []
    for i, logits in enumerate(spec.teacher_forced(states, inputs)):
        out.append(F.cross_entropy(logits.float().flatten(0, 1), target[:, i : i + t].flatten(0, 1)))
    return out


def _fingerprint(config: TrainConfig, data: Rollouts) -> str:
    h = hashlib.sha256(json.dumps(attrs.asdict(config), sort_keys=True).encode())
    h.update(data.tokens.numpy().tobytes())
    return h.hexdigest()


def _optimizer(spec: Speculator, config: TrainConfig) -> torch.optim.AdamW:
    decay = [p for p in spec.parameters() if p.dim() >= 2]
    rest = [p for p in spec.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=config.lr, betas=(0.9, 0.95), eps=1e-8)


def train(spec: Speculator, data: Rollouts, config: TrainConfig, work: Path, lm_head: Tensor | None = None, *,
          stop_at: int | None = None, progress: bool = True, desc: str = "train") -> Speculator:
    """Train `spec` (float32 weights, bf16 autocast where the CPU has bf16 units) for
    `config.steps` steps, resuming a checkpoint of the same run in `work`; `stop_at` stops early
    with a checkpoint, as an interruption would."""
    work.mkdir(parents=True, exist_ok=True)
    ckpt = work / CKPT
    key = _fingerprint(config, data)
    opt = _optimizer(spec, config)
    step = load_checkpoint(ckpt, key, spec, opt)
    end = config.steps if stop_at is None else min(stop_at, config.steps)
    # bf16 where the CPU has bf16 units (spec_sdk.zoo.precision); the recorded hidden
    # states are stored in bf16 and go to float32 otherwise
    fast = bf16_autocast()
    head = None if lm_head is None else lm_head.detach().to(torch.bfloat16 if fast else torch.float32)
    spec.train()
    bar = tqdm(total=config.steps, initial=step, desc=desc, disable=not progress, dynamic_ncols=True, mininterval=1.0)
    while step < end:
        lr = lr_at(config, step)
        for group in opt.param_groups:
            group["lr"] = lr
        rows = batch_indices(len(data), config.batch_size, step, config.seed)
        hidden = data.hidden[rows] if fast else data.hidden[rows].float()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=fast):
            per_head = losses(spec, hidden, data.tokens[rows].long(), config, head)
            loss = torch.stack(per_head).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(spec.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.3f}", h0=f"{per_head[0].item():.2f}", lr=f"{lr:.1e}")
        if step % config.checkpoint_every == 0 or step == end:
            save_checkpoint(ckpt, step, spec, opt, key)
    bar.close()
    return spec.eval()
