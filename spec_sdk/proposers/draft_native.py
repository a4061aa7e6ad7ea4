"""Drafting through the native backend: the draft model's forward without transformers' per-call
overhead, every request of a step in one batched forward, each in its own preallocated KV slot.

The draft model is driven through the `TargetModel` calls it already has: the tokens to catch up
on go in as a chain "draft" and are all committed, then each drafted token is scored alone and
committed. Rolling back to what the target accepted is `truncate`, which costs nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from spec_sdk.backends.base import ScoreItem
from spec_sdk.backends.native import NativeBackend
from spec_sdk.errors import EngineFullError
from spec_sdk.types import Draft

# (logits [n, V], the n request indices they belong to) -> per row: token, confidence, q
Choose = Callable[[Tensor, Sequence[int]], tuple[list[int], list[float], list[Tensor | None]]]


class NativeDrafter:
    def __init__(self, model: torch.nn.Module, max_slots: int) -> None:
        # a drafting forward is a token a request; catch-ups vary too much to build ahead
        self.backend = NativeBackend(model, max_slots=max_slots, warm_nodes=2)
        self.ids: dict[str, list[int]] = {}  # per request: the tokens its slot holds
        self.verified: dict[str, int] = {}  # how many of those are the request's own tokens

    @property
    def max_positions(self) -> int:
        return self.backend.max_context

    def finish(self, rid: str) -> None:
        if rid in self.ids:
            self.backend.remove(rid)
            del self.ids[rid], self.verified[rid]

    def cached_tokens(self) -> int:
        return sum(map(len, self.ids.values()))

    def _roll_back(self, rid: str, tokens: Sequence[int]) -> list[int] | None:
        """The tokens to feed before drafting, after cropping the slot to what still agrees with
        `tokens`; None when no slot is free for a new request (it simply gets no draft)."""
        if rid not in self.ids:
            try:
                self.backend.add(rid, [int(tokens[0])])  # caches nothing: the first token is fed below
            except EngineFullError:
                return None
            self.ids[rid], self.verified[rid] = [], 0
        ids = self.ids[rid]
        limit = len(tokens) - 1  # the last token is always fed
        keep = min(self.verified[rid], limit)
        while keep < min(len(ids), limit) and ids[keep] == tokens[keep]:
            keep += 1
        if keep < len(ids):
            self.backend.truncate(rid, keep)
            del ids[keep:]
        self.verified[rid] = keep
        return list(tokens[keep:])

    def draft(self, rids: Sequence[str], tokens: Sequence[Sequence[int]], budgets: Sequence[int],
              choose: Choose, keep_going: Callable[[float], bool]) -> list[tuple[list[int], list[float], list[Tensor | None]]]:
        out: list[tuple[list[int], list[float], list[Tensor | None]]] = [([], [], []) for _ in rids]
        pending = [self._roll_back(r, t) for r, t in zip(rids, tokens)]
        live = [i for i, p in enumerate(pending) if p]
        if not live:
            return out
        # A long catch-up (a new request's prompt) runs alone, so it does not pad the batch.
        groups = [[i] for i in live if len(pending[i]) > 8]  # type: ignore[arg-type]
        short = [i for i in live if len(pending[i]) <= 8]  # type: ignore[arg-type]
        rows: dict[int, Tensor] = {}
        for group in groups + ([short] if short else []):
            items = []
            for i in group:
                p = pending[i]
                assert p is not None
                items.append(ScoreItem(rids[i], p[0], Draft(tokens=p[1:]) if len(p) > 1 else None))
            for i, res in zip(group, self.backend.score(items)):
                p = pending[i]
                assert p is not None
                self.backend.commit(rids[i], range(len(p) - 1))
                self.ids[rids[i]].extend(p)
                self.verified[rids[i]] = len(self.ids[rids[i]])
                rows[i] = res.logits[-1]
        logits = torch.stack([rows[i] for i in live])
        active = live
        while True:
            chosen, confidence, qs = choose(logits, active)
            still = []
            for j, i in enumerate(active):
                toks, conf, dist = out[i]
                toks.append(chosen[j])
                conf.append(confidence[j])
                dist.append(qs[j])
                if len(toks) < budgets[i] and keep_going(confidence[j]):
                    still.append(i)
            if not still:
                return out
            results = self.backend.score([ScoreItem(rids[i], out[i][0][-1]) for i in still])
            for i in still:
                self.backend.commit(rids[i], [])
                self.ids[rids[i]].append(out[i][0][-1])
            logits = torch.stack([res.logits[-1] for res in results])
            active = still
