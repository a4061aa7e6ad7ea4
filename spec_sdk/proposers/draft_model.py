"""Draft model: a small causal LM that shares the target's tokenizer guesses the next tokens.

Each request keeps its own KV cache in the draft model and the ids it holds. Before drafting,
the cache is rolled back to the longest prefix that still agrees with the request (the
accepted draft tokens stay cached; the rejected ones and everything after are cropped), and
only the tokens past that prefix are fed: usually the target's bonus token alone, so a step
costs about `k` one-token forwards of the draft however long the context.

All requests of a step draft together: their caches are padded into one batch (a 2-D
attention mask hides the padding, position ids keep each request's own positions), and the
batch is split back into per-request caches afterwards.

Under greedy decoding the draft is the argmax chain and deterministic (`probs=None`). Under
sampling it is drawn from the draft's distribution after the request's own warping, and
`Draft.probs` holds exactly the rows it was drawn from -- the `q` that rejection sampling
needs to stay lossless. (`sample=False` drafts greedily under sampling too; the verifier
treats that as a one-hot `q`, which is lossless as well.)

Drafting stops early once the draft's confidence in its own token (the top probability of
its unwarped distribution) falls below `min_confidence`; that last token is still proposed. `Draft.score` is the expected
number of accepted tokens if each token were accepted with its confidence: the sum of the
running products of confidences.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs
import torch
from torch import Tensor
from transformers import AutoModelForCausalLM, DynamicCache, PreTrainedModel

from spec_sdk.errors import ConfigError
from spec_sdk.proposers.base import RequestView
from spec_sdk.types import Draft
from spec_sdk.verify.keyed import DRAFT_CONTEXT
from spec_sdk.verify.warp import sample_with_uniforms, warp_probs

# A request whose draft cache lags by more than this many tokens (a new request's prompt)
# catches up in a forward of its own, so one long prompt does not pad the whole batch.
_CATCH_UP_ALONE = 8


@attrs.define(eq=False)
class _State:
    cache: DynamicCache
    ids: list[int]  # the tokens whose keys and values `cache` holds, in order
    sampled: bool = False  # draft tokens are drawn (with the request's keyed draws), not the argmax
    verified: int = 0  # ids[:verified] are the request's own tokens; the rest are draft tokens
    drafted: list[int] = attrs.field(factory=list)  # this call's draft so far


def _common_prefix(state: _State, tokens: Sequence[int], limit: int) -> int:
    """How many of the cached ids still agree with `tokens`, at most `limit`.

    The first `state.verified` ids were the request's own tokens, which only ever grow, so only
    the draft tokens fed after them need comparing: O(draft length), whatever the context.
    """
    i = min(state.verified, limit)
    n = min(len(state.ids), limit)
    while i < n and state.ids[i] == tokens[i]:
        i += 1
    return i


def _vocab(tokenizer: Any) -> dict[str, int] | None:
    get = getattr(tokenizer, "get_vocab", None)
    return dict(get()) if callable(get) else None


class DraftModelProposer:
    """Drafts with a small causal LM (an object or a local path) that shares the target's tokenizer."""

    name = "draft_model"
    needs_hidden_states = False

    def __init__(
        self,
        model: PreTrainedModel | str | Path,
        *,
        tokenizer: Any = None,
        min_confidence: float = 0.0,
        sample: bool = True,
        dtype: torch.dtype | None = None,
        runner: str = "auto",
        max_slots: int = 64,
    ) -> None:
        """`tokenizer`: the draft's tokenizer, compared with the target's when the engine binds
        the proposer (loaded from `model` when it is a path). `min_confidence`: stop drafting once
        the draft's top probability falls below it (0 drafts the whole budget). `runner`: "native"
        runs the draft on the native backend (Llama family: no per-call overhead, KV slots, one
        batched forward), "hf" through transformers, "auto" native when the model allows it.
        `max_slots`: requests the native runner holds at once (later ones get no draft)."""
        if not 0.0 <= min_confidence < 1.0:
            raise ConfigError(f"min_confidence must be in [0, 1), got {min_confidence}")
        if isinstance(model, (str, Path)):
            if tokenizer is None:
                from transformers import AutoTokenizer

                try:
                    tokenizer = AutoTokenizer.from_pretrained(str(model))
                except (OSError, ValueError):
                    tokenizer = None
            model = AutoModelForCausalLM.from_pretrained(str(model), dtype=dtype or torch.float32)
        elif dtype is not None:
            model = model.to(dtype)
        self.model: PreTrainedModel = model.eval()
        self.tokenizer = tokenizer
        self.min_confidence = float(min_confidence)
        self.sample = bool(sample)
        self.device: torch.device = next(model.parameters()).device
        self.draft_vocab = int(model.get_output_embeddings().weight.shape[0])
        self.width = self.draft_vocab  # the target's vocabulary width, set by bind()
        self.max_positions = int(getattr(model.config, "max_position_embeddings", None) or 1 << 30)
        self._states: dict[str, _State] = {}
        self._native = self._make_native(runner, max_slots)
        if self._native is not None:
            self.max_positions = self._native.max_positions

    def _make_native(self, runner: str, max_slots: int) -> Any:
        if runner not in ("auto", "hf", "native"):
            raise ConfigError(f"runner must be 'auto', 'hf' or 'native', got {runner!r}")
        if runner == "hf":
            return None
        from spec_sdk.proposers.draft_native import NativeDrafter

        try:
            return NativeDrafter(self.model, max_slots)
        except Exception as exc:  # not a Llama-family model the native forward computes
            if runner == "native":
                raise ConfigError(f"the native runner cannot run this draft model: {exc}") from exc
            return None

    # -- binding -------------------------------------------------------------------------

    def bind(self, target: Any, tokenizer: Any = None) -> None:
        """Refuse a target whose tokenizer differs, and size the drafts' `probs` to its vocabulary.

        Heads may differ in width (vocabularies padded to a multiple of 64, say) as long as every
        token the tokenizer knows fits in both.
        """
        width = int(target.vocab_size)
        mine, theirs = _vocab(self.tokenizer), _vocab(tokenizer)
        if mine is not None and theirs is not None:
            if mine != theirs:
                extra = len(set(mine.items()) ^ set(theirs.items()))
                raise ConfigError(
                    f"the draft model's tokenizer differs from the target's ({extra} entries differ): "
                    "a draft model must share the target's vocabulary"
                )
            used = max(mine.values(), default=-1) + 1
            if used > min(width, self.draft_vocab):
                raise ConfigError(
                    f"the tokenizer has {used} ids but the draft head has {self.draft_vocab} and the target {width}"
                )
        elif width != self.draft_vocab:
            raise ConfigError(
                f"the draft model's head has {self.draft_vocab} tokens and the target's {width}; without both "
                "tokenizers to compare, the vocabularies must have the same size"
            )
        target_device = getattr(target, "device", None)
        if target_device is not None and torch.device(target_device) != self.device:
            self.model.to(target_device)
            self.device = torch.device(target_device)
        self.width = width

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, req: RequestView) -> None:
        # the cache fills lazily at the first propose: a cascade may never ask this proposer
        pass

    def finish(self, req: RequestView) -> None:
        self._states.pop(req.id, None)
        if self._native is not None:
            self._native.finish(req.id)

    def observe(self, req: RequestView, accepted: Sequence[int], hidden: Tensor | None) -> None:
        pass  # the next propose rolls the cache back to what the target accepted

    def stats(self) -> dict[str, int]:
        """Requests with a draft cache, and the tokens those caches hold."""
        cached = sum(len(s.ids) for s in self._states.values())
        if self._native is not None:
            cached += self._native.cached_tokens()
        return {"requests": len(self._states), "cached_tokens": cached}

    # -- drafting ------------------------------------------------------------------------

    def _state(self, req: RequestView) -> _State:
        state = self._states.get(req.id)
        if state is None:
            state = _State(DynamicCache(config=self.model.config), [], not req.params.greedy and self.sample)
            self._states[req.id] = state
        return state

    def _forward(self, ids: Tensor, positions: Tensor, cache: DynamicCache, mask: Tensor | None) -> Tensor:
        with torch.inference_mode():
            out = self.model(
                input_ids=ids, position_ids=positions, attention_mask=mask, past_key_values=cache, use_cache=True
            )
        return out.logits

    def _roll_back(self, state: _State, tokens: Sequence[int]) -> list[int]:
        """Crop the cache to what still agrees with `tokens`; return the tokens left to feed."""
        keep = _common_prefix(state, tokens, len(tokens) - 1)  # the last token is always fed
        drop = len(state.ids) - keep
        if drop:
            state.cache.crop(-drop)
            del state.ids[keep:]
        state.verified = keep
        pending = list(tokens[keep:])
        if len(pending) > _CATCH_UP_ALONE:
            head = pending[:-1]
            pos = torch.arange(keep, keep + len(head), device=self.device).unsqueeze(0)
            self._forward(torch.tensor([head], device=self.device), pos, state.cache, None)
            state.ids.extend(head)
            state.verified = len(state.ids)
            pending = pending[-1:]
        return pending

    def propose(self, reqs: Sequence[RequestView], budgets: Sequence[int]) -> list[Draft | None]:
        out: list[Draft | None] = [None] * len(reqs)
        # the draft's own position limit may be shorter than the target's context
        budgets = [min(b, self.max_positions - len(r.tokens)) for r, b in zip(reqs, budgets)]
        live = [i for i, b in enumerate(budgets) if b > 0]
        if not live:
            return out
        states = [self._state(reqs[i]) for i in live]
        for s in states:
            s.drafted = []
        if self._native is not None:
            views = [reqs[i] for i in live]

            def choose(logits: Tensor, rows: Sequence[int]) -> tuple[list[int], list[float], list[Tensor | None]]:
                return self._choose(logits, views, states, rows)

            drafted = self._native.draft(
                [v.id for v in views], [v.tokens for v in views], [budgets[i] for i in live], choose,
                lambda c: c >= self.min_confidence,
            )
            for i, (t, c, q) in zip(live, drafted):
                out[i] = self._make_draft(t, c, q) if t else None
            return out
        pending = [self._roll_back(s, reqs[i].tokens) for i, s in zip(live, states)]
        drafts = self._draft([reqs[i] for i in live], [budgets[i] for i in live], states, pending)
        for i, d in zip(live, drafts):
            out[i] = d
        return out

    def _choose(self, logits: Tensor, reqs: Sequence[RequestView], states: Sequence[_State],
                rows: Sequence[int]) -> tuple[list[int], list[float], list[Tensor | None]]:
        """The next draft token of each request in `rows` (`logits` has one row per entry of
        `rows`), its confidence, and the distribution it was drawn from (None when greedy)."""
        logits = self._fit(logits.float())
        confidence = torch.softmax(logits, dim=-1).amax(dim=-1).tolist()
        tokens = logits.argmax(dim=-1).tolist()
        qs: list[Tensor | None] = [None] * len(rows)
        sampled = [j for j, r in enumerate(rows) if states[r].sampled]
        if sampled:
            q = warp_probs(logits[sampled], [reqs[rows[j]].params for j in sampled])
            u = []
            for j in sampled:
                state, req = states[rows[j]], reqs[rows[j]]
                have = req.tokens
                u.append(req.draws.draft(len(have) + len(state.drafted), [*have[-DRAFT_CONTEXT:], *state.drafted]))
            drawn = sample_with_uniforms(q, torch.tensor(u, dtype=torch.float64)).tolist()
            for n, j in enumerate(sampled):
                tokens[j] = int(drawn[n])
                qs[j] = q[n]
        for j, r in enumerate(rows):
            states[r].drafted.append(tokens[j])
        return tokens, confidence, qs

    def _fit(self, logits: Tensor) -> Tensor:
        """Draft logits over the target's vocabulary width (pad with -inf or cut: bind() checked
        that every real token fits in both)."""
        if self.draft_vocab == self.width:
            return logits
        if self.draft_vocab > self.width:
            return logits[:, : self.width]
        pad = logits.new_full((logits.shape[0], self.width - self.draft_vocab), float("-inf"))
        return torch.cat([logits, pad], dim=-1)

    def _draft(self, reqs: Sequence[RequestView], budgets: Sequence[int], states: Sequence[_State],
               pending: Sequence[list[int]]) -> list[Draft | None]:
        b = len(reqs)
        lengths = [len(s.ids) for s in states]
        width = max(map(len, pending))
        ids = torch.zeros((b, width), dtype=torch.long)
        positions = torch.zeros((b, width), dtype=torch.long)
        for r, (p, c) in enumerate(zip(pending, lengths)):
            ids[r, : len(p)] = torch.tensor(p)
            positions[r, : len(p)] = torch.arange(c, c + len(p))
            positions[r, len(p):] = c + len(p) - 1  # padding: any position; its keys are masked out
        cache, mask = self._merge(states, lengths, pending)
        logits = self._forward(ids.to(self.device), positions.to(self.device), cache, mask)
        last = torch.tensor([len(p) - 1 for p in pending], device=logits.device)
        rows_logits = logits[torch.arange(b, device=logits.device), last]

        tokens: list[list[int]] = [[] for _ in range(b)]
        conf: list[list[float]] = [[] for _ in range(b)]
        qs: list[list[Tensor | None]] = [[] for _ in range(b)]
        active = list(range(b))
        fed = [0] * b  # draft tokens fed back (their keys are in the cache)
        step = 0
        while True:
            chosen, confidence, q = self._choose(rows_logits[active], reqs, states, active)
            still = []
            for j, r in enumerate(active):
                tokens[r].append(chosen[j])
                conf[r].append(confidence[j])
                qs[r].append(q[j])
                if len(tokens[r]) < budgets[r] and confidence[j] >= self.min_confidence:
                    still.append(r)
            if not still:
                break
            step += 1
            nxt = torch.zeros((b, 1), dtype=torch.long)
            pos = torch.zeros((b, 1), dtype=torch.long)
            for r in range(b):
                pos[r, 0] = lengths[r] + len(pending[r]) + step - 1
            for r in still:
                nxt[r, 0] = tokens[r][-1]
                fed[r] += 1
            if mask is not None:
                column = torch.zeros((b, 1), dtype=mask.dtype, device=mask.device)
                column[still] = 1
                mask = torch.cat([mask, column], dim=1)
            if b == 1:
                logits = self._forward(nxt.to(self.device), pos.to(self.device), cache, None)
                rows_logits = logits[:, -1]
            else:
                logits = self._forward(nxt.to(self.device), pos.to(self.device), cache, mask)
                rows_logits = logits[:, -1]
            active = still

        self._split(cache, states, lengths, pending, tokens, fed, width)
        return [self._make_draft(t, c, q) for t, c, q in zip(tokens, conf, qs)]

    def _make_draft(self, tokens: list[int], conf: list[float], qs: list[Tensor | None]) -> Draft | None:
        # The token whose confidence fell below the floor stays: it cost no extra draft forward,
        # one more position in the target's forward is nearly free, and it is right often enough.
        score, run = 0.0, 1.0
        for c in conf:
            run *= c
            score += run
        probs = None
        if qs[0] is not None:
            probs = torch.stack([q for q in qs if q is not None])
        return Draft(tokens=tokens, probs=probs, score=score, source=self.name)

    def _merge(self, states: Sequence[_State], lengths: Sequence[int],
               pending: Sequence[list[int]]) -> tuple[DynamicCache, Tensor | None]:
        """One cache for the batch: each request's keys left-aligned, padded to the longest.
        A lone request uses its own cache as is."""
        if len(states) == 1:
            return states[0].cache, None
        longest = max(lengths)
        width = max(map(len, pending))
        mask = torch.zeros((len(states), longest + width), dtype=torch.long)
        for r, (c, p) in enumerate(zip(lengths, pending)):
            mask[r, :c] = 1
            mask[r, longest: longest + len(p)] = 1
        if longest == 0:
            return DynamicCache(config=self.model.config), mask.to(self.device)
        layers = []
        per_state = [list(s.cache) if c else None for s, c in zip(states, lengths)]
        n_layers = len(next(p for p in per_state if p is not None))
        for layer in range(n_layers):
            ks, vs = [], []
            for r, c in enumerate(lengths):
                ref = next(p for p in per_state if p is not None)[layer][0]
                k = ref.new_zeros((1, ref.shape[1], longest, ref.shape[3]))
                v = k.clone()
                if c:
                    kr, vr, _ = per_state[r][layer]  # type: ignore[index]
                    k[:, :, :c] = kr
                    v[:, :, :c] = vr
                ks.append(k)
                vs.append(v)
            layers.append((torch.cat(ks), torch.cat(vs)))
        return DynamicCache(ddp_cache_data=layers, config=self.model.config), mask.to(self.device)

    def _split(self, cache: DynamicCache, states: Sequence[_State], lengths: Sequence[int],
               pending: Sequence[list[int]], tokens: Sequence[list[int]], fed: Sequence[int], width: int) -> None:
        """Give each request back its own rows of the batch cache: its old keys, the tokens it
        caught up on, and the draft tokens it fed."""
        for r, s in enumerate(states):
            s.ids.extend(pending[r])
            s.verified = len(s.ids)
            s.ids.extend(tokens[r][: fed[r]])
        if len(states) == 1:
            return
        longest = max(lengths)
        layers = list(cache)
        for r, s in enumerate(states):
            c, n = lengths[r], len(pending[r])
            start = longest + width
            keep = torch.cat([
                torch.arange(c), torch.arange(longest, longest + n), torch.arange(start, start + fed[r])
            ]).to(self.device)
            data = [(k[r: r + 1, :, keep], v[r: r + 1, :, keep]) for k, v, _ in layers]
            s.cache = DynamicCache(ddp_cache_data=data, config=self.model.config)
