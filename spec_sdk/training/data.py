"""Distillation data: the frozen target continues prompt chunks of the zoo's own training text,
and every position's last-layer hidden state is recorded.

A sequence is `prompt_len` tokens cut from the zoo corpus (spec_sdk.zoo.data; held-out documents
for the held-out set) followed by `gen_len` tokens the target wrote, greedily or sampled. Hidden
states come from the same batched forwards that generate (prefill, then one token at a time with a
KV cache), so a rollout costs one target forward per generated token and nothing more.

Everything is a pure function of (target weights, config, seed): chunk offsets come from
`random.Random(seed)`, sampled tokens from a seeded generator. Rollouts are saved in parts, so an
interrupted run resumes after the last finished batch.
"""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import Tensor
from tqdm.auto import tqdm

from spec_sdk.training.recipe import TrainConfig

# The zoo corpus caps (characters) sampled for prompt chunks: enough text that chunks rarely
# overlap, small enough to read in seconds.
CHAT_CHARS, CODE_CHARS, HELDOUT_CHARS = 3_000_000, 1_500_000, 400_000


@attrs.frozen(eq=False)
class Rollouts:
    """`tokens [N, L]` int32, `hidden [N, L, H]` bf16 (position t's state predicted token t+1),
    `sampled [N]` bool (continuation sampled rather than greedy); the first `prompt_len` tokens
    are the corpus's."""

    tokens: Tensor
    hidden: Tensor
    sampled: Tensor
    prompt_len: int

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


def prompt_chunks(tokenizer: Any, config: TrainConfig) -> tuple[Tensor, Tensor]:
    """(train chunks [prompts, P], held-out chunks [heldout_prompts, P]) of corpus tokens."""
    from spec_sdk.zoo import data

    corpus = data.build_corpus(config.seed, CHAT_CHARS, CODE_CHARS, HELDOUT_CHARS)
    rng = random.Random(config.seed)
    return (_cut(tokenizer, corpus.train, config.prompts, config.prompt_len, rng),
            _cut(tokenizer, corpus.heldout, config.heldout_prompts, config.prompt_len, rng))


def _cut(tokenizer: Any, docs: Any, count: int, length: int, rng: random.Random) -> Tensor:
    stream: list[int] = []
    for ids in tokenizer([d.text for d in docs])["input_ids"]:
        stream.extend(ids)
    if len(stream) < length + 1:
        raise ValueError(f"the corpus holds {len(stream)} tokens, fewer than one {length}-token prompt")
    starts = [rng.randrange(len(stream) - length) for _ in range(count)]
    return torch.tensor([stream[s : s + length] for s in starts], dtype=torch.int32)


@torch.inference_mode()
def rollout(model: Any, prompts: Tensor, gen_len: int, temperature: Tensor,
            generator: torch.Generator) -> tuple[Tensor, Tensor]:
    """Continue `prompts [B, P]` by `gen_len` tokens: row b greedy when `temperature[b] == 0`, else
    sampled at that temperature. Returns tokens `[B, P + gen_len]` and hidden `[B, P + gen_len, H]`."""
    ids = prompts.long()
    out = model(input_ids=ids, use_cache=True, output_hidden_states=True)
    hidden, tokens = [out.hidden_states[-1]], [ids]
    sampled = temperature > 0
    for step in range(gen_len):
        logits = out.logits[:, -1].float()
        nxt = logits.argmax(dim=-1)
        if bool(sampled.any()):
            probs = torch.softmax(logits[sampled] / temperature[sampled, None], dim=-1)
            nxt[sampled] = torch.multinomial(probs, 1, generator=generator)[:, 0]
        tokens.append(nxt[:, None])
        out = model(input_ids=nxt[:, None], past_key_values=out.past_key_values, use_cache=True,
                    output_hidden_states=True)
        hidden.append(out.hidden_states[-1])
    return torch.cat(tokens, 1), torch.cat(hidden, 1)


def fingerprint(target_dir: Path, config: TrainConfig, split: str) -> str:
    """Identifies a data set: the target's weights, the data fields of the config, the split."""
    h = hashlib.sha256()
    for name in sorted(os.listdir(target_dir)):
        if name.endswith((".safetensors", ".json", ".bin")):
            h.update(name.encode())
            h.update((target_dir / name).read_bytes())
    h.update(repr((config.data_key(), split)).encode())
    return h.hexdigest()[:16]


def build_rollouts(model: Any, chunks: Tensor, config: TrainConfig, cache: Path, key: str, *, greedy_only: bool = False,
                   desc: str = "rollouts", progress: bool = True) -> Rollouts:
    """Roll out every chunk; cached in `cache` under `key`, one file per finished batch until the
    whole set is done, so an interrupted run redoes at most one batch."""
    final = cache / f"rollouts-{key}.pt"
    if final.exists():
        saved = torch.load(final, weights_only=True)
        return Rollouts(saved["tokens"], saved["hidden"], saved["sampled"], config.prompt_len)
    cache.mkdir(parents=True, exist_ok=True)
    n, batch = len(chunks), config.rollout_batch
    # Which rows are sampled is fixed by the seed, not by how the work is batched or resumed.
    share = 0.0 if greedy_only else config.sample_share
    order = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed + 17))
    is_sampled = torch.zeros(n, dtype=torch.bool)
    is_sampled[order[: round(share * n)]] = True
    starts = list(range(0, n, batch))
    part = [cache / f"rollouts-{key}.part{start:06d}.pt" for start in starts]
    done = sum(min(batch, n - s) for s, p in zip(starts, part) if p.exists())
    bar = tqdm(total=n, initial=done, desc=desc, disable=not progress, dynamic_ncols=True, mininterval=1.0)
    for start, path in zip(starts, part):
        if path.exists():
            continue
        rows = slice(start, min(n, start + batch))
        # One generator per batch, seeded by its first row: a resumed run draws the same tokens.
        gen = torch.Generator().manual_seed(config.seed * 1_000_003 + start)
        temps = torch.where(is_sampled[rows], config.temperature, 0.0)
        tokens, hidden = rollout(model, chunks[rows], config.gen_len, temps, gen)
        _atomic_save({"tokens": tokens.to(torch.int32), "hidden": hidden.to(torch.bfloat16)}, path)
        bar.update(rows.stop - rows.start)
    bar.close()
    loaded = [torch.load(p, weights_only=True) for p in part]
    data = {k: torch.cat([x[k] for x in loaded]) for k in ("tokens", "hidden")}
    data["sampled"] = is_sampled
    _atomic_save(data, final)
    for p in part:
        p.unlink()
    return Rollouts(data["tokens"], data["hidden"], data["sampled"], config.prompt_len)


def _atomic_save(obj: object, path: Path) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)  # a kill mid-save leaves the previous file intact
