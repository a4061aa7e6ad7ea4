"""Held-out quality of a speculator, and the baselines it has to beat, on the same positions.

Measured on greedy continuations of held-out prompts, at the positions where head 0's label is a
token the target generated (so every label is what greedy decoding with the target produces):
- per-head accuracy, teacher-forced: head i fed the true tokens, right when its argmax is the
  target's token 2+i places ahead (the number papers and ArcticTraining report);
- free-running drafts: the heads fed their own guesses, as in decoding; `accepted_mean` is the
  mean number of leading draft tokens greedy verification would accept (MAL - 1 at k =
  n_predict), `accept_at` the share of drafts whose first j+1 tokens are all right;
- baselines for head 0: "unigram" always guesses the most frequent label of the training
  positions; "bigram" guesses the most frequent training label after the input token.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import torch

from spec_sdk.speculators import Speculator
from spec_sdk.training.data import Rollouts
from spec_sdk.training.loop import first_position, head_batch


@torch.no_grad()
def head_accuracy(spec: Speculator, data: Rollouts, batch: int = 32) -> dict[str, Any]:
    n = spec.n_predict
    t0 = first_position(data.prompt_len, use_prompt=False)
    correct = torch.zeros(n)
    accepted = torch.zeros(n + 1)  # histogram of leading correct draft tokens
    count = 0
    for start in range(0, len(data), batch):
        hidden = data.hidden[start : start + batch].float()
        tokens = data.tokens[start : start + batch].long()
        states, inputs = head_batch(hidden, tokens, n, t0)
        t = states.shape[1]
        for i, logits in enumerate(spec.teacher_forced(states, inputs)):
            correct[i] += (logits.argmax(-1) == inputs[:, i + 1 : i + 1 + t]).sum()
        guess, _ = spec.draft(states.flatten(0, 1), inputs[:, :t].flatten(), n)
        truth = torch.stack([inputs[:, i + 1 : i + 1 + t] for i in range(n)], -1).flatten(0, 1)
        lead = (guess == truth).long().cumprod(-1).sum(-1)
        accepted += torch.bincount(lead, minlength=n + 1)[: n + 1].float()
        count += states.shape[0] * t
    at_least = [float(accepted[j + 1 :].sum() / count) for j in range(n)]
    return {
        "positions": count,
        "head_accuracy": [float(c / count) for c in correct],
        "accepted_mean": float((accepted * torch.arange(n + 1)).sum() / count),
        "accept_at": at_least,
    }


def baselines(train: Rollouts, heldout: Rollouts, n_predict: int, use_prompt: bool) -> dict[str, float]:
    """Head-0 accuracy of the unigram and bigram guessers, fitted on the training positions (the
    same ones the speculator trains on) and scored on the held-out positions `head_accuracy` uses."""
    def pairs(data: Rollouts, t0: int) -> tuple[list[int], list[int]]:
        inputs = data.tokens[:, t0 + 1 :].long()
        t = data.tokens.shape[1] - 1 - n_predict - t0  # positions per sequence, as in head_batch
        return inputs[:, :t].flatten().tolist(), inputs[:, 1 : 1 + t].flatten().tolist()

    prev, label = pairs(train, first_position(train.prompt_len, use_prompt))
    top = Counter(label).most_common(1)[0][0]
    follow: dict[int, Counter[int]] = {}
    for a, b in zip(prev, label):
        follow.setdefault(a, Counter())[b] += 1
    best = {a: c.most_common(1)[0][0] for a, c in follow.items()}
    h_prev, h_label = pairs(heldout, first_position(heldout.prompt_len, use_prompt=False))
    return {
        "unigram": sum(y == top for y in h_label) / len(h_label),
        "bigram": sum(best.get(a, top) == y for a, y in zip(h_prev, h_label)) / len(h_label),
    }
