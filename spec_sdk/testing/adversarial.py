"""Proposers that test the engine rather than speed it up.

Every one records how it was used (`calls`, `proposed_tokens`, `observed`, `active`) and
notes protocol breaches by the engine in `protocol_errors` instead of raising them (an
exception from a proposer would just be swallowed by the engine as a failed draft), so a test
can assert both that the proposer was really exercised and that the engine drove it right.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import torch

from spec_sdk.proposers.base import RequestView
from spec_sdk.testing.targets import TableTarget, greedy_step
from spec_sdk.types import Draft

if TYPE_CHECKING:
    from transformers import PreTrainedModel

__all__ = [
    "FaultyProposer",
    "OracleProposer",
    "RandomProposer",
    "RecordingProposer",
    "SampledRandomProposer",
    "WrongProposer",
    "greedy_next_fn",
]

NextToken = Callable[[Sequence[int]], int]


class RecordingProposer:
    """Bookkeeping shared by the test proposers; subclasses write `_draft`."""

    name = "recording"
    needs_hidden_states = False

    def __init__(self, max_len: int | None = None) -> None:
        self.max_len = max_len
        self.calls: Counter[str] = Counter()  # method name -> number of calls
        self.proposed_tokens = 0
        self.active: set[str] = set()  # started and not finished
        self.observed: dict[str, list[int]] = {}  # request id -> every accepted token seen
        self.protocol_errors: list[str] = []

    def start(self, req: RequestView) -> None:
        self.calls["start"] += 1
        if req.id in self.active:
            self.protocol_errors.append(f"start: {req.id!r} started twice")
        self.active.add(req.id)
        self.observed[req.id] = []

    def propose(self, reqs: Sequence[RequestView], budgets: Sequence[int]) -> Sequence[Draft | None]:
        self.calls["propose"] += 1
        if len(reqs) != len(budgets):
            self.protocol_errors.append(f"propose: {len(reqs)} requests but {len(budgets)} budgets")
        for req in reqs:
            if req.id not in self.active:
                self.protocol_errors.append(f"propose: {req.id!r} was not started")
        drafts = [self._draft(req, int(budget)) for req, budget in zip(reqs, budgets)]
        self.proposed_tokens += sum(len(d) for d in drafts if d is not None)
        return drafts

    def observe(self, req: RequestView, accepted: Sequence[int], hidden: torch.Tensor | None) -> None:
        self.calls["observe"] += 1
        if req.id not in self.active:
            self.protocol_errors.append(f"observe: {req.id!r} was not started")
        self.observed.setdefault(req.id, []).extend(int(t) for t in accepted)

    def finish(self, req: RequestView) -> None:
        self.calls["finish"] += 1
        if req.id not in self.active:
            self.protocol_errors.append(f"finish: {req.id!r} was not started (or finished twice)")
        self.active.discard(req.id)

    def _length(self, budget: int) -> int:
        return budget if self.max_len is None else min(budget, self.max_len)

    def _draft(self, req: RequestView, budget: int) -> Draft | None:
        raise NotImplementedError


def _keyed_rng(seed: int, req: RequestView) -> random.Random:
    # Keyed by request and position, not by call order, so drafts do not depend on how the
    # engine batches requests. (random.Random hashes a str seed deterministically.)
    return random.Random(f"{seed}:{req.id}:{len(req.tokens)}")


class RandomProposer(RecordingProposer):
    """Uniformly random tokens, deterministic in (seed, request id, position); `probs=None`.

    Its `score` claims every token will be accepted, the worst lie a policy can be told.
    """

    name = "random"

    def __init__(self, vocab_size: int, seed: int = 0, max_len: int | None = None) -> None:
        super().__init__(max_len)
        self.vocab_size = vocab_size
        self.seed = seed

    def _draft(self, req: RequestView, budget: int) -> Draft | None:
        n = self._length(budget)
        if n <= 0:
            return None
        rng = _keyed_rng(self.seed, req)
        tokens = [rng.randrange(self.vocab_size) for _ in range(n)]
        return Draft(tokens=tokens, score=float(n), source=self.name)


class SampledRandomProposer(RecordingProposer):
    """Draws each token from a random distribution q built for that position and returns q.

    q is a softmax of `scale`-wide Gaussian logits with about a `sparsity` share of entries
    zeroed (never all), so rejection sampling meets q > p, q < p and q = 0. Each token is drawn
    from its row by inverse CDF on that same float64 row, so `probs` is exactly the
    distribution the token came from.

    The generator is stateful (seeded once, advanced by every draw) on purpose: for rejection
    sampling to be lossless the draft must be a *fresh* draw from q. A proposer that returned
    the same token and q every time it saw the same context would be a deterministic proposer
    claiming a non-one-hot q, which is not lossless. A fresh instance with the same seed
    repeats the same draws for the same sequence of calls.
    """

    name = "sampled_random"

    def __init__(
        self,
        vocab_size: int,
        seed: int = 0,
        max_len: int | None = None,
        sparsity: float = 0.3,
        scale: float = 2.0,
        dtype: torch.dtype = torch.float64,
    ) -> None:
        super().__init__(max_len)
        self.vocab_size = vocab_size
        self.sparsity = sparsity
        self.scale = scale
        self.dtype = dtype
        self.generator = torch.Generator().manual_seed(seed)

    def _draft(self, req: RequestView, budget: int) -> Draft | None:
        n = self._length(budget)
        if n <= 0:
            return None
        rows = [self.random_q() for _ in range(n)]
        tokens = [self.draw(q) for q in rows]
        probs = torch.stack(rows)
        score = float(sum(float(q[t]) for q, t in zip(rows, tokens)))
        # Rows are built and sampled in float64; a float32 `dtype` rounds them by ~1e-7.
        return Draft(tokens=tokens, probs=probs.to(self.dtype), score=score, source=self.name)

    def random_q(self) -> torch.Tensor:
        """A random float64 distribution over the vocabulary (a row of `probs`)."""
        g = self.generator
        logits = torch.randn(self.vocab_size, generator=g, dtype=torch.float64) * self.scale
        q = torch.softmax(logits, dim=0)
        drop = torch.rand(self.vocab_size, generator=g, dtype=torch.float64) < self.sparsity
        drop[int(torch.argmax(q))] = False  # keep at least one entry
        q = torch.where(drop, torch.zeros_like(q), q)
        return q / q.sum()

    def draw(self, q: torch.Tensor) -> int:
        """One token from `q` by inverse CDF (never a zero-probability token)."""
        u = float(torch.rand((), generator=self.generator, dtype=torch.float64))
        cdf = torch.cumsum(q, dim=0)
        # First index whose CDF exceeds u * total: a zero entry repeats its predecessor's CDF
        # value, so it can never be the first to exceed anything. Only when u * total rounds
        # up to total is there no such index; then take the last token with mass.
        target = torch.tensor(u * float(cdf[-1]), dtype=cdf.dtype)
        tok = int(torch.searchsorted(cdf, target, right=True))
        if tok >= self.vocab_size:
            tok = int(torch.nonzero(q)[-1])
        return tok


def greedy_next_fn(model_or_target: PreTrainedModel | TableTarget) -> NextToken:
    """The target's greedy next token after a context, computed the plain way (a table
    lookup, or a full forward with no cache)."""
    return lambda context: greedy_step(model_or_target, context)[0]


class OracleProposer(RecordingProposer):
    """Proposes the target's own greedy continuation: every token is accepted under greedy."""

    name = "oracle"

    def __init__(self, next_token: NextToken, max_len: int | None = None) -> None:
        super().__init__(max_len)
        self.next_token = next_token

    def _draft(self, req: RequestView, budget: int) -> Draft | None:
        n = self._length(budget)
        if n <= 0:
            return None
        context = list(req.tokens[:])
        for _ in range(n):
            context.append(int(self.next_token(context)))
        return Draft(tokens=context[-n:], score=float(n), source=self.name)


class WrongProposer(RecordingProposer):
    """Never proposes the greedy token: at every position of its own chain it picks a random
    other token. Under greedy the first is always rejected, yet the output must not change."""

    name = "wrong"

    def __init__(self, next_token: NextToken, vocab_size: int, seed: int = 0, max_len: int | None = None) -> None:
        if vocab_size < 2:
            raise ValueError("WrongProposer needs vocab_size >= 2 to avoid the greedy token")
        super().__init__(max_len)
        self.next_token = next_token
        self.vocab_size = vocab_size
        self.seed = seed

    def _draft(self, req: RequestView, budget: int) -> Draft | None:
        n = self._length(budget)
        if n <= 0:
            return None
        rng = _keyed_rng(self.seed, req)
        context = list(req.tokens[:])
        for _ in range(n):
            right = int(self.next_token(context))
            context.append((right + 1 + rng.randrange(self.vocab_size - 1)) % self.vocab_size)
        return Draft(tokens=context[-n:], score=float(n), source=self.name)


FAULT_MODES = ("raise", "out_of_vocab", "too_long", "bad_probs")


class FaultyProposer(RecordingProposer):
    """Misbehaves in one way on every `propose`, for engine robustness tests.

    - "raise": raises RuntimeError.
    - "out_of_vocab": first token id `vocab_size` (the smallest invalid one, to catch
      off-by-one checks), then -1 (which Python indexing would silently wrap).
    - "too_long": `budget + 3` valid tokens.
    - "bad_probs": valid tokens with a `probs` of the right shape whose rows are NaN,
      negative and do not sum to 1.
    Pass the target's `vocab_size` so the invalid values are the subtle ones.
    """

    name = "faulty"

    def __init__(self, mode: str, vocab_size: int = 64) -> None:
        if mode not in FAULT_MODES:
            raise ValueError(f"mode must be one of {FAULT_MODES}, got {mode!r}")
        super().__init__()
        self.mode = mode
        self.vocab_size = vocab_size
        self.name = f"faulty_{mode}"

    def _draft(self, req: RequestView, budget: int) -> Draft | None:
        n = max(budget, 1)  # misbehave even when asked for nothing
        if self.mode == "raise":
            raise RuntimeError("FaultyProposer: deliberate failure in propose")
        if self.mode == "out_of_vocab":
            return Draft(tokens=[self.vocab_size] + [-1] * (n - 1), score=float(n), source=self.name)
        if self.mode == "too_long":
            return Draft(tokens=[0] * (budget + 3), score=float(budget + 3), source=self.name)
        probs = torch.full((n, self.vocab_size), -0.5, dtype=torch.float64)
        probs[:, 0] = float("nan")
        return Draft(tokens=[0] * n, probs=probs, score=float(n), source=self.name)
