"""Toy targets and target-only references for losslessness tests.

- `tiny_llama`: a random, deterministic, float64 Llama small enough to run on any CPU.
- `TableTarget`: a `TargetModel` whose next-token distribution is a fixed table over the last
  one or two tokens, so every output distribution can be computed exactly by enumeration.
  It keeps real per-request "KV" state and raises `KVConventionError` on any misuse, so an
  engine driven against it proves it follows the backend contract.
- `reference_greedy` / `tie_aware_equal`: target-only greedy decoding, computed without the
  SDK, and DESIGN.md's tie-aware comparison rule.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING

import attrs
import torch

from spec_sdk.backends.base import ScoreItem, ScoreResult
from spec_sdk.types import Draft, SamplingParams

if TYPE_CHECKING:
    from transformers import LlamaForCausalLM, PreTrainedModel

__all__ = [
    "KVConventionError",
    "TableTarget",
    "exact_sequence_distribution",
    "greedy_step",
    "reference_greedy",
    "tie_aware_equal",
    "tiny_llama",
]


def tiny_llama(
    vocab_size: int = 64,
    hidden_size: int = 32,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    max_position_embeddings: int = 512,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    initializer_range: float = 0.5,
) -> LlamaForCausalLM:
    """A random Llama, the same for the same arguments, in eval mode.

    The default init (std 0.02) gives near-uniform next-token distributions whose top-2 logit
    gaps are ~1e-5 at worst; std 0.5 makes them peaked (median top-1 prob ~0.3), so greedy
    decoding is decided by real margins rather than by rounding. No BOS/EOS/PAD ids: generation
    runs to the requested length unless a test sets an EOS itself.
    """
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings,
        initializer_range=initializer_range,
        bos_token_id=None,
        eos_token_id=None,
        pad_token_id=None,
    )
    # Weight init draws from the global RNG; fork it so building a model neither depends on
    # nor disturbs the caller's random state.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.to(dtype).eval()


class KVConventionError(AssertionError):
    """The engine broke the TargetModel contract (an AssertionError: it is a bug, not bad input)."""


@attrs.define
class _Request:
    cached: list[int]  # tokens whose "KV entries" are held
    expect_last: int | None  # after add: the prompt's last token must be fed first
    pending: tuple[int, Draft | None] | None = None  # last score's (last_token, draft), until commit


class TableTarget:
    """A TargetModel whose next-token distribution depends only on the last `order` tokens.

    Positions before the start of the sequence count as a virtual "no token" (index
    `vocab_size` in the table), so prompts shorter than `order` are fine. Probabilities are a
    Dirichlet(`concentration`) draw per context: small concentrations give peaked rows, and in
    float64 exact ties have probability zero. Logits are log-probabilities; the hidden state
    at a position is its logits row (`hidden_size == vocab_size`), which is all it knows.
    """

    def __init__(
        self,
        vocab_size: int = 4,
        order: int = 1,
        seed: int = 0,
        concentration: float = 0.5,
        eos_token_ids: Sequence[int] = (),
        max_context: int = 4096,
    ) -> None:
        if order not in (1, 2):
            raise ValueError(f"order must be 1 or 2, got {order}")
        if vocab_size < 2:
            raise ValueError(f"vocab_size must be >= 2, got {vocab_size}")
        self.vocab_size = vocab_size
        self.hidden_size = vocab_size
        self.supports_trees = True  # scores every node from its own root-to-node context
        self.order = order
        self.eos_token_ids = tuple(int(t) for t in eos_token_ids)
        self.max_context = max_context
        self.device = torch.device("cpu")
        self.dtype = torch.float64
        gen = torch.Generator().manual_seed(seed)
        shape = (vocab_size + 1,) * order + (vocab_size,)
        # Normalised exponentials are exactly a flat Dirichlet draw; raising them to
        # 1/concentration first peaks the rows like a Dirichlet(concentration) would, without
        # needing a Gamma sampler that accepts a seeded generator.
        expo = -torch.log(torch.rand(shape, generator=gen, dtype=torch.float64))
        weights = expo ** (1.0 / concentration)
        self.table = weights / weights.sum(-1, keepdim=True)
        self._requests: dict[str, _Request] = {}
        # Counters for tests: one `score` call per engine step is the performance contract.
        self.score_calls = 0
        self.nodes_scored = 0

    # -- the distribution ----------------------------------------------------------------
    def next_distribution(self, context: Sequence[int]) -> torch.Tensor:
        """Raw next-token probabilities [V] after `context` (no warping)."""
        tail = [int(t) for t in context[-self.order :]] if len(context) else []
        padded = [self.vocab_size] * (self.order - len(tail)) + tail
        return self.table[tuple(padded)]

    def _logits(self, context: Sequence[int]) -> torch.Tensor:
        return torch.log(self.next_distribution(context))

    # -- TargetModel -----------------------------------------------------------------------
    def add(self, request_id: str, prompt: Sequence[int]) -> None:
        prompt = [int(t) for t in prompt]
        _require(request_id not in self._requests, f"add: request {request_id!r} already added")
        _require(len(prompt) >= 1, "add: empty prompt")
        _require(len(prompt) <= self.max_context, f"add: prompt of {len(prompt)} > max_context")
        self._check_tokens(prompt, "add: prompt")
        self._requests[request_id] = _Request(cached=prompt[:-1], expect_last=prompt[-1])

    def score(self, items: Sequence[ScoreItem]) -> list[ScoreResult]:
        ids = [it.request_id for it in items]
        _require(len(set(ids)) == len(ids), f"score: duplicate request ids in one batch {ids}")
        # Check the whole batch before touching any state, so a rejected call changes nothing.
        for it in items:
            self._check_item(it)
        self.score_calls += 1
        results = []
        for it in items:
            req = self._requests[it.request_id]
            tokens = list(it.draft.tokens) if it.draft is not None else []
            root = req.cached + [it.last_token]
            rows = [self._logits(root)]
            for i in range(len(tokens)):
                rows.append(self._logits(root + [tokens[j] for j in _path_to(it.draft, i)]))
            logits = torch.stack(rows)
            results.append(ScoreResult(logits=logits, hidden=logits.clone() if it.want_hidden else None))
            req.pending = (it.last_token, it.draft)
            req.expect_last = None
            self.nodes_scored += len(rows)
        return results

    def _check_item(self, it: ScoreItem) -> None:
        req = self._get(it.request_id, "score")
        _require(req.pending is None, f"score: request {it.request_id!r} scored again before commit")
        if req.expect_last is not None:
            _require(
                it.last_token == req.expect_last,
                f"score: first feed of {it.request_id!r} must be the prompt's last token "
                f"{req.expect_last}, got {it.last_token}",
            )
        self._check_tokens([it.last_token], "score: last_token")
        n = 0
        if it.draft is not None:
            self._check_tokens(it.draft.tokens, "score: draft")
            n = len(it.draft)
        _require(
            len(req.cached) + 1 + n <= self.max_context,
            f"score: {it.request_id!r} would exceed max_context={self.max_context}",
        )

    def commit(self, request_id: str, path: Sequence[int]) -> None:
        req = self._get(request_id, "commit")
        _require(req.pending is not None, f"commit: request {request_id!r} has no scored step to commit")
        assert req.pending is not None  # for the type checker
        last_token, draft = req.pending
        path = [int(i) for i in path]
        n = len(draft) if draft is not None else 0
        _require(all(0 <= i < n for i in path), f"commit: path {path} has nodes outside the draft of {n}")
        if path:
            assert draft is not None
            _require(
                _path_to(draft, path[-1]) == path,
                f"commit: {path} is not a root-to-node path of the last draft",
            )
        kept = [draft.tokens[i] for i in path] if draft is not None else []
        req.cached = req.cached + [last_token] + kept
        req.pending = None

    def remove(self, request_id: str) -> None:
        self._get(request_id, "remove")
        del self._requests[request_id]

    # -- inspection for tests ----------------------------------------------------------------
    def cached_tokens(self, request_id: str) -> tuple[int, ...]:
        """The tokens whose KV entries the request holds now."""
        return tuple(self._get(request_id, "cached_tokens").cached)

    @property
    def active_requests(self) -> frozenset[str]:
        """Requests added and not yet removed (a leak check: empty once the engine is idle)."""
        return frozenset(self._requests)

    def _get(self, request_id: str, what: str) -> _Request:
        req = self._requests.get(request_id)
        _require(req is not None, f"{what}: unknown request {request_id!r}")
        assert req is not None
        return req

    def _check_tokens(self, tokens: Sequence[int], what: str) -> None:
        bad = [t for t in tokens if not 0 <= int(t) < self.vocab_size]
        _require(not bad, f"{what} has token ids outside [0, {self.vocab_size}): {bad}")


def _require(cond: bool, msg: str) -> None:
    # Not `assert`: these checks must survive `python -O`.
    if not cond:
        raise KVConventionError(msg)


def _path_to(draft: Draft | None, node: int) -> list[int]:
    """Node indices from the root's first child down to `node` (inclusive)."""
    if draft is None:
        return []
    if draft.parents is None:
        return list(range(node + 1))
    path = [node]
    while draft.parents[path[-1]] != -1:
        path.append(draft.parents[path[-1]])
    return path[::-1]


def exact_sequence_distribution(
    target: TableTarget, prompt: Sequence[int], length: int, params: SamplingParams
) -> dict[tuple[int, ...], float]:
    """The exact probability of every `length`-token output after `prompt` under `params`.

    Each step warps the table's log-probs with `warp_probs` (temperature, top-k, top-p,
    min-p); greedy params put all mass on the argmax. EOS and stop tokens are ignored: every
    sequence has exactly `length` tokens. Sequences of probability 0 are left out. Cost is
    O(V^length), so keep both small.
    """
    from spec_sdk.verify.warp import warp_probs

    out: dict[tuple[int, ...], float] = {}
    # Depth-first over prefixes, pruning zero-probability branches (top-k etc. cut many).
    stack: list[tuple[tuple[int, ...], float]] = [((), 1.0)]
    while stack:
        seq, prob = stack.pop()
        if len(seq) == length:
            out[seq] = out.get(seq, 0.0) + prob
            continue
        context = list(prompt) + list(seq)
        if params.greedy:
            step = torch.zeros(target.vocab_size, dtype=torch.float64)
            step[int(torch.argmax(target.next_distribution(context)))] = 1.0
        else:
            step = warp_probs(target._logits(context)[None], params)[0].to(torch.float64)
        for tok, p in enumerate(step.tolist()):
            if p > 0.0:
                stack.append((seq + (tok,), prob * p))
    return out


def _top2(logits: torch.Tensor) -> tuple[int, float]:
    """Greedy token (first index of the max, as torch.argmax and HF generate pick) and the
    gap between the two best logits."""
    top = torch.topk(logits, 2)
    return int(torch.argmax(logits)), float(top.values[0] - top.values[1])


def greedy_step(model_or_target: PreTrainedModel | TableTarget, context: Sequence[int]) -> tuple[int, float]:
    """(greedy next token, top-1 minus top-2 logit) after `context`, computed the plain way:
    a table lookup, or one full forward over the whole context with no KV cache."""
    if isinstance(model_or_target, TableTarget):
        return _top2(model_or_target._logits(context))
    model = model_or_target
    ids = torch.tensor([list(context)], dtype=torch.long, device=model.device)
    with torch.no_grad():
        logits = model(input_ids=ids, use_cache=False).logits[0, -1]
    return _top2(logits)


def reference_greedy(
    model_or_target: PreTrainedModel | TableTarget, prompt: Sequence[int], n: int
) -> tuple[list[int], list[float]]:
    """Target-only greedy decoding of `n` tokens after `prompt` (EOS ignored), and each
    step's top-2 logit gap. Slow on purpose: no cache, nothing shared with the engine."""
    context = [int(t) for t in prompt]
    tokens: list[int] = []
    margins: list[float] = []
    for _ in range(n):
        tok, margin = greedy_step(model_or_target, context)
        tokens.append(tok)
        margins.append(margin)
        context.append(tok)
    return tokens, margins


def tie_aware_equal(
    got: Sequence[int], ref_tokens: Sequence[int], ref_margins: Sequence[float], eps: float = 1e-6
) -> bool:
    """DESIGN.md's rule: equal, or equal up to a first divergence where the reference's top-2
    gap was below `eps` (a near-tie that different float reductions may break either way;
    after it the two continue from different contexts and cannot be compared)."""
    got = [int(t) for t in got]
    ref = [int(t) for t in ref_tokens]
    for i, (a, b) in enumerate(itertools.zip_longest(got, ref)):
        if a != b:
            return a is not None and b is not None and i < len(ref_margins) and ref_margins[i] < eps
    return True
