"""A batch's plan as the adaptive policy weighs it: expected tokens over predicted seconds,
kept incrementally so that trying one request's option costs O(proposers), not O(batch); and
the coordinate ascent that picks every request's option over it."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence


class BatchPlan:
    """A batch's planned tokens, draft tokens and per-proposer budgets, for quick what-ifs.
    Costs are the fitted coefficients as plain floats: no tensor work in the inner loop."""

    __slots__ = ("base", "base_size", "per_token", "first_draft", "curve", "once", "propose", "tokens", "drafted", "ks",
                 "_full")

    def __init__(self, score: tuple[float, float, float, float], other: float,
                 propose: Mapping[str, tuple[float, ...]], size: int,
                 curve: Sequence[float] | None = None) -> None:
        a, b, c, e = score  # fixed, per request, per draft token, once if any draft (ScoreFit)
        self.base = a + b * size + other
        self.base_size = size
        self.per_token = c
        self.first_draft = e
        # seconds that d draft tokens add (ScoreFit.draft_curve, e included); past its end, c a token
        self.curve = list(curve) if curve is not None else [0.0]
        self.once = True  # whether the once-per-forward cost of drafts counts (see best_options)
        self.propose = propose
        self.tokens = 0.0
        self.drafted = 0
        self.ks: dict[str, Counter[int]] = {}
        self._full: list[float] = []  # best_case_rate's draft_seconds(size * k) for k = 1.., the same for every proposer

    def draft_seconds(self, drafted: int) -> float:
        """What `drafted` draft tokens add to the forward."""
        if drafted <= 0:
            return 0.0
        curve = self.curve
        if len(curve) < 2:
            t = self.first_draft + self.per_token * drafted
        elif drafted < len(curve):
            t = curve[drafted]
        else:
            t = curve[-1] + self.per_token * (drafted - len(curve) + 1)
        return t if self.once else self._less_once(t)

    def _less_once(self, seconds: float) -> float:
        """Seconds of drafts with the once-per-forward cost taken off (never below 0)."""
        return max(seconds - self.first_draft, 0.0)

    def add(self, name: str | None, k: int, gain: float, remove: bool = False) -> None:
        self.tokens += gain
        if name is None or k == 0:
            return
        sign = -1 if remove else 1
        self.drafted += sign * k
        counts = self.ks.setdefault(name, Counter())
        counts[k] += sign
        if counts[k] == 0:
            del counts[k]

    def _propose_time(self, name: str, requests: int, k: int) -> float:
        coef = self.propose.get(name)
        if coef is None or requests == 0:
            return 0.0
        return coef[0] + coef[1] * requests + coef[2] * k

    def proposer_seconds(self) -> dict[str, tuple[float, int, int]]:
        """Per proposer in use: (seconds, requests, largest budget) as the batch stands."""
        out = {}
        for n, counts in self.ks.items():
            requests = sum(counts.values())
            kmax = max(counts, default=0)
            out[n] = (self._propose_time(n, requests, kmax), requests, kmax)
        return out

    def rate(self) -> float:
        """Tokens per second of the batch as it stands."""
        others = self.proposer_seconds()
        return self.rate_with(None, 0, 0.0, others, sum(t for t, _, _ in others.values()))

    def rate_with(self, name: str | None, k: int, gain: float, others: dict[str, tuple[float, int, int]],
                  others_total: float, cold: float = 0.0) -> float:
        """Tokens per second of the batch if the request being decided took (name, k); `cold`:
        the one-time seconds of that proposer's first call for this request."""
        drafted = self.drafted + (k if name is not None else 0)
        seconds = self.base + self.draft_seconds(drafted) + others_total + cold
        if name is not None and k > 0:
            t, requests, kmax = others.get(name, (0.0, 0, 0))
            seconds += self._propose_time(name, requests + 1, max(kmax, k)) - t
        total = self.tokens + gain
        return total / seconds if seconds > 0 else 0.0

    def best_case_rate(self, name: str, kmax: int) -> float | None:
        """Tokens per second of the batch if every request drafted k of `name`'s tokens and all
        were accepted, at the best k up to `kmax`: what no plan with `name` can beat. None while
        its calls are untimed."""
        coef = self.propose.get(name)
        if coef is None:
            return None
        size = self.base_size
        full = self._full if self.once else []  # (kept only for the plan as made: once counts)
        while len(full) < kmax:
            full.append(self.draft_seconds(size * (len(full) + 1)))
        best = 0.0
        fixed = self.base + coef[0] + coef[1] * size
        for k in range(1, kmax + 1):
            seconds = fixed + full[k - 1] + coef[2] * k
            if seconds > 0 and size * (k + 1) / seconds > best:
                best = size * (k + 1) / seconds
        return best

    def draft_row(self, upto: int) -> list[float]:
        """What 0..`upto` more draft tokens would add to the forward as the batch stands: the
        same for every proposer a request weighs, so computed once per request."""
        return [self.draft_seconds(self.drafted + kk) for kk in range(upto + 1)]

    def draft_rows(self, upto: int) -> tuple[list[float], list[float]]:
        """draft_row with the once-per-forward cost in and without it, from one pass."""
        once, self.once = self.once, True
        with_once = self.draft_row(upto)
        self.once = once
        return with_once, [self._less_once(t) for t in with_once]

    def best_k(self, name: str, gains: Sequence[float], others: dict[str, tuple[float, int, int]],
               others_total: float, cold: float, row: Sequence[float]) -> tuple[int, float]:
        """The k in 1..len(gains)-1 at which `rate_with(name, k, gains[k], ...)` peaks, and that
        rate: every k (measured costs need not be convex, so the peak may not be the first),
        in one loop -- the ascent's inner loop, a call per option cost more than the options.
        `row`: draft_row, at least as long as `gains`."""
        t, requests, kmax = others.get(name, (0.0, 0, 0))
        coef = self.propose.get(name)
        fixed = self.base + others_total + cold - t
        per_call = per_k = 0.0
        if coef is not None:
            fixed += coef[0] + coef[1] * (requests + 1)
            per_call, per_k = coef[2] * kmax, coef[2]
        tokens = self.tokens
        best_k, best = 0, 0.0
        for kk in range(1, len(gains)):
            seconds = fixed + row[kk] + (per_k * kk if kk > kmax else per_call)
            rate = (tokens + gains[kk]) / seconds if seconds > 0 else 0.0
            if rate > best * (1 + 1e-9):
                best_k, best = kk, rate
        return best_k, best


def best_options(make_plan: Callable[[], BatchPlan], choice: list[tuple[str | None, int]], forced: set[int],
             gains: Mapping[str, list[list[float]]], names: Sequence[str],
             cold: Callable[[int, str], float]) -> None:
    """Each request's (proposer, k) in `choice`, in place: two rounds of coordinate ascent, each
    request in turn taking its best option given the others' (`forced` ones keep theirs).
    `gains[n][i][k]`: request i's expected tokens with k tokens of n; `cold(i, n)`: the share
    of n's first call for request i this step bears. The batch's totals are kept incrementally,
    so trying an option costs O(proposers), not O(batch)."""
    batch = make_plan()
    # The once-per-forward cost of drafts is left out of the ascent: no single request's
    # draft may pay it alone where the batch's drafts together do, and the ascent would
    # never start. It is weighed below, against nobody speculating.
    batch.once = False
    longest = max((len(gains[n][0]) - 1 for n in names), default=0) if choice else 0
    for i, (name, k) in enumerate(choice):
        batch.add(name, k, gains[name][i][k] if name is not None else 1.0)
    # a big batch: one round is close enough; a lone request's second round would see the same
    for _ in range(2 if 1 < len(choice) <= 16 else 1):
        for i in range(len(choice)):
            if i in forced:
                continue
            name, k = choice[i]
            batch.add(name, k, -(gains[name][i][k] if name is not None else 1.0), remove=True)
            others = batch.proposer_seconds()
            others_total = sum(t for t, _, _ in others.values())
            best: tuple[str | None, int] = (None, 0)
            best_rate = batch.rate_with(None, 0, 1.0, others, others_total)
            # Pruning, exact: a draft adds at most (its first position's acceptance) tokens per
            # draft token (deeper positions add less) and costs at least the cheapest average
            # a token can add here, so if that ratio does not beat the batch's rate, no draft
            # of this request does.
            first = max((gains[n][i][1] for n in names), default=1.0) - 1.0
            # what 0..longest more draft tokens add, with the once-cost (which draft) and without
            # it (whether to draft): the same draft_seconds either way, e taken off or not
            row_once, row = batch.draft_rows(longest) if first > 0 else ([], [])
            # the least average seconds a draft token adds on top of the batch's drafts
            cheapest = min(((row[d] - row[0]) / d for d in range(1, longest + 1)), default=0.0) if row else 0.0
            if first > 0 and (cheapest <= 0 or first > cheapest * best_rate):
                # Whether to draft at all is weighed without the once-per-forward cost (above);
                # which draft, with it: a batch that drafts pays it whatever the length, and left
                # out it is fixed time missing from every length's seconds, which favours short
                # drafts -- at one request on a CPU (2 ms once, a 16 ms step) a draft model
                # sampling at 0.72 a position was kept at k=3, its k=4 and 5 priced 2-3% behind
                # where with the once-cost in they were 1% ahead.
                pick = None  # the best draft with the once-cost in
                for n in names:
                    kk, rate_once = batch.best_k(n, gains[n][i], others, others_total, cold(i, n), row_once)
                    if kk == 0 or (pick is not None and rate_once <= pick[0] * (1 + 1e-9)):
                        continue
                    rate = batch.rate_with(n, kk, gains[n][i][kk], others, others_total, cold(i, n))
                    if rate > best_rate * (1 + 1e-9):
                        pick = (rate_once, n, kk)
                if pick is not None:
                    best = (pick[1], pick[2])
            choice[i] = best
            batch.add(best[0], best[1], gains[best[0]][i][best[1]] if best[0] is not None else 1.0)
    # Coordinate ascent can stall where everyone speculates and the forward is so slow that
    # one more draft still looks worth it, and it did not see the once-per-forward cost;
    # compare with nobody speculating (explorers aside).
    batch.once = True
    quiet = make_plan()
    for i, (name, k) in enumerate(choice):
        if i in forced:
            quiet.add(name, k, gains[name][i][k] if name is not None else 1.0)
        else:
            quiet.add(None, 0, 1.0)
    if quiet.rate() > batch.rate():
        for i in range(len(choice)):
            if i not in forced:
                choice[i] = (None, 0)
