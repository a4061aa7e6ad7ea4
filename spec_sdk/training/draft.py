"""`spec-sdk distill-draft`: teach a draft model to predict what the target writes.

A draft model trained on the same text as the target learns the text, not the target: the zoo's
full draft agreed with the target's greedy token at 58% of held-out positions. Here it is
fine-tuned on the target's own rollouts (the same cached data the speculators learn from,
spec_sdk.training.data: corpus prompts the target continued, greedily or sampled), with the
target's whole next-token distribution as the label at every position (KL(target || draft);
the target's distribution is its LM head over the recorded hidden state, so the target never
runs again). Deterministic: batches are drawn from a seeded generator, no dropout.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import attrs
import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm.auto import tqdm

from spec_sdk.errors import ConfigError
from spec_sdk.training import data as rollouts
from spec_sdk.training.loop import lr_at
from spec_sdk.training.recipe import TrainConfig
from spec_sdk.zoo.precision import bf16_autocast

REPORT = "distill.json"


@attrs.frozen
class DraftDistillConfig:
    """How long and how hard to fine-tune; the rollouts come from `data` (a speculator recipe,
    so both share one cache)."""

    data: TrainConfig
    steps: int = 1200
    batch_size: int = 16  # rollouts per step; every position of each is used
    lr: float = 3e-3
    warmup: int = 20
    weight_decay: float = 0.01
    seed: int = 0

    def __attrs_post_init__(self) -> None:
        for name in ("steps", "batch_size", "warmup"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if not self.lr > 0:
            raise ConfigError(f"lr must be > 0, got {self.lr}")


def agreement(draft: Any, data: rollouts.Rollouts, lm_head: Tensor, batch: int = 50) -> float:
    """How often the draft's greedy token is the target's, over the generated positions."""
    hits = total = 0
    start = data.prompt_len - 1  # the position whose next token is the first generated one
    with torch.no_grad():
        for i in range(0, len(data), batch):
            tokens = data.tokens[i : i + batch].long()
            want = (data.hidden[i : i + batch, start:-1].float() @ lm_head.T).argmax(-1)
            got = draft(input_ids=tokens).logits[:, start:-1].argmax(-1)
            hits += int((want == got).sum())
            total += want.numel()
    return hits / max(total, 1)


def train_draft(draft: Any, data: rollouts.Rollouts, lm_head: Tensor, config: DraftDistillConfig,
                progress: bool = True) -> list[float]:
    """Fine-tune `draft` in place; returns the loss of every step."""
    gen = torch.Generator().manual_seed(config.seed)
    opt = torch.optim.AdamW(draft.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    losses: list[float] = []
    draft.train()
    for step in tqdm(range(config.steps), desc="distill draft", disable=not progress, dynamic_ncols=True,
                     mininterval=1.0):
        for group in opt.param_groups:
            group["lr"] = lr_at(config, step)
        rows = torch.randint(0, len(data), (config.batch_size,), generator=gen)
        tokens = data.tokens[rows].long()
        with torch.no_grad():
            target = F.log_softmax(data.hidden[rows, :-1].float() @ lm_head.T, -1)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=tokens.device.type == "cpu" and bf16_autocast()):
            logits = draft(input_ids=tokens).logits[:, :-1]
        loss = F.kl_div(F.log_softmax(logits.float(), -1), target, log_target=True, reduction="none").sum(-1).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(draft.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.item())
    draft.eval()
    return losses


def run(target: Path, draft_dir: Path, out: Path, config: DraftDistillConfig, *, work: Path | None = None,
        progress: bool = True, log: Any = print, names: tuple[str, str] | None = None) -> dict[str, Any]:
    """Distil the draft in `draft_dir` towards the target in `target` into `out` (a model directory
    like the draft's, tokenizer files included); returns the report also written to
    `out/distill.json`. `work` (default `out/.work`, removed on success) caches the rollouts.
    `names`: how the report names the target and the draft (default: their paths)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    started = time.perf_counter()
    keep_work = work is not None
    work = work if work is not None else out / ".work"
    model = AutoModelForCausalLM.from_pretrained(str(target), dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(target))
    stored = json.loads((draft_dir / "config.json").read_text()).get("dtype") or "float32"
    saved_dtype = getattr(torch, stored) if isinstance(stored, str) else torch.float32
    draft = AutoModelForCausalLM.from_pretrained(str(draft_dir), dtype=torch.float32)
    if int(draft.config.vocab_size) != int(model.config.vocab_size):
        raise ConfigError(f"draft vocabulary {draft.config.vocab_size} != target's {model.config.vocab_size}")
    torch.manual_seed(config.seed)
    d = config.data
    train_chunks, heldout_chunks = rollouts.prompt_chunks(tokenizer, d)
    train_data = rollouts.build_rollouts(model, train_chunks, d, work, rollouts.fingerprint(target, d, "train"),
                                         desc="rollouts train", progress=progress)
    heldout = rollouts.build_rollouts(model, heldout_chunks, d, work, rollouts.fingerprint(target, d, "heldout"),
                                      greedy_only=True, desc="rollouts held-out", progress=progress)
    lm_head = model.get_output_embeddings().weight.detach()
    before = agreement(draft, heldout, lm_head)
    t0 = time.perf_counter()
    losses = train_draft(draft, train_data, lm_head, config, progress)
    train_seconds = time.perf_counter() - t0
    after = agreement(draft, heldout, lm_head)
    out.mkdir(parents=True, exist_ok=True)
    for f in draft_dir.iterdir():  # tokenizer and generation files stay the draft's
        if f.is_file() and f.suffix != ".safetensors" and f.name not in ("config.json", REPORT):
            shutil.copy2(f, out / f.name)
    draft.to(saved_dtype).save_pretrained(out)  # as stored before: the committed zoo stays small
    report = {
        "target": names[0] if names else str(target),
        "draft": names[1] if names else str(draft_dir),
        "config": {k: v for k, v in attrs.asdict(config).items() if k != "data"},
        "data": {"train_sequences": len(train_data), "heldout_sequences": len(heldout),
                 "sequence_length": int(train_data.tokens.shape[1]), "data_key": list(d.data_key())},
        "heldout_agreement_before": round(before, 4),
        "heldout_agreement_after": round(after, 4),
        "first_loss": round(losses[0], 4),
        "last_loss": round(sum(losses[-20:]) / len(losses[-20:]), 4),
        "train_seconds": round(train_seconds, 1),
        "total_seconds": round(time.perf_counter() - started, 1),
        "torch_threads": torch.get_num_threads(),
    }
    (out / REPORT).write_text(json.dumps(report, indent=2) + "\n")
    log(f"[distill-draft] held-out agreement with the target's greedy token {before:.3f} -> {after:.3f}; "
        f"loss {report['first_loss']:.3f} -> {report['last_loss']:.3f}; training {train_seconds:.0f}s")
    if not keep_work:
        shutil.rmtree(work, ignore_errors=True)
    return report
