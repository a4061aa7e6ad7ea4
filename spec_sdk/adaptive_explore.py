"""What the adaptive policy explores: which proposer a request tries beyond the plan, and why.

An exploration is one of, in this order: the first timed call of a proposer never timed (a
warm call is what times it); a proposer too dear for the shadow whose pooled acceptance for
this kind of request (greedy, sampled) rests on fewer than `LEARN_DRAFTS` drafts; a retry of
a dear proposer by a request that stopped speculating; or, with probability `explore`, a
random (proposer, k) of a dear proposer (the shadow keeps a cheap one current). What it may
cost is paid from an `ExploreBudget` (the policy prices and affords each try); what came of
it sets the budget's pace and the request's next retry.

A timed proposer is not explored at a batch size where, even with every draft of every
request accepted, its calls and draft tokens would leave the batch slower than it has been
running at that size (`hopeless`): at 16 requests on a CPU, a draft model's batched call cost
about what the target's forward did, and learning it there took 3-8% of a run.
"""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence

import attrs

from spec_sdk.adaptive_cost import Costs
from spec_sdk.adaptive_plan import BatchPlan
from spec_sdk.adaptive_state import ExploreBudget, RequestState
from spec_sdk.estimators import Acceptance

# a proposer is tried (within the exploration budget) until its pooled acceptance for greedy,
# and for sampled, requests rests on this many drafts
LEARN_DRAFTS = 4.0
# ...and exploration credit accrues this many times faster until it does
LEARN_BOOST = 3.0

Pooled = Mapping[tuple[str, bool], Acceptance]


@attrs.define(eq=False)
class Explorer:
    explore: float
    retry_after: int
    rng: random.Random  # the policy's: one stream for all its random choices
    budget: ExploreBudget
    explorations: int = 0
    why: Counter[str] = attrs.field(factory=Counter)  # explorations run, by reason
    tries: Counter[tuple[str, bool]] = attrs.field(factory=Counter)  # learning tries, per (proposer, greedy)
    seen: set[tuple[str, bool]] = attrs.field(factory=set)  # (proposer, greedy) met in batches
    unlearned: set[tuple[str, bool]] = attrs.field(factory=set)  # ...still to be learned, as of this step
    rates: dict[int, float] = attrs.field(factory=dict)  # realised tokens/s per batch size (decayed)
    hopeless: set[str] = attrs.field(factory=set)  # this step's, see the module's docstring

    def to_learn(self, name: str, greedy: bool, pooled: Pooled) -> bool:
        """Whether `name` is still to be learned for greedy (sampled) requests: its pooled
        acceptance rests on fewer than LEARN_DRAFTS drafts, and it has not been tried for that
        twice as often already (one that seldom drafts would keep the budget boosted for good)."""
        acc = pooled.get((name, greedy))
        learned = acc.weight if acc is not None else 0.0
        return learned < LEARN_DRAFTS and self.tries[(name, greedy)] < 2 * LEARN_DRAFTS

    def note_batch(self, names: Sequence[str], states: Sequence[RequestState], pooled: Pooled) -> None:
        self.seen.update((n, g) for n in names for g in {s.greedy for s in states})
        self.unlearned = {(n, g) for n, g in self.seen if self.to_learn(n, g, pooled)}

    def learning(self, pooled: Pooled) -> bool:
        """Whether some proposer worth exploring is still to be learned (LEARN_BOOST applies).
        Never with `explore` 0: nothing earns the budget learning tries are paid from, so what
        is not learned yet never will be, and waiting for it kept every request awake for good
        (sampled code: 0.75 ms a step of policy for nothing, 0.91x of target-only)."""
        if self.explore <= 0.0:
            return False
        return any(self.to_learn(n, g, pooled) for n, g in self.seen if n not in self.hopeless)

    def record_rate(self, size: int, rate: float) -> None:
        old = self.rates.get(size)
        self.rates[size] = rate if old is None else 0.8 * old + 0.2 * rate

    def find_hopeless(self, names: Sequence[str], plan: BatchPlan, kmax: Callable[[str], int]) -> set[str]:
        """The proposers not worth exploring at the plan's batch size (module docstring)."""
        rate = self.rates.get(plan.base_size)
        if rate is None:
            return set()
        out = set()
        for n in names:
            best = plan.best_case_rate(n, kmax(n))
            if best is not None and best < rate:
                out.add(n)
        return out

    def pick(self, state: RequestState, names: Sequence[str], used: set[str], step: int, costs: Costs,
             kmax: Callable[[str], int]) -> tuple[str, int] | None:
        """This request's exploration this step, if any (`used`: proposers not to pick), with
        its reason in `state.why` and `state.timing` set for a timing or learning try."""
        untimed = [n for n in names if n not in costs.propose and n not in used]
        # a warm call is what times it; and the cheapest first call first (never called: 0)
        untimed.sort(key=lambda n: (n not in state.warm, costs.cold.get(n, 0.0)))
        if not untimed:
            # Then proposers too dear for the shadow whose acceptance for this kind of request
            # (greedy, sampled) rests on fewer than LEARN_DRAFTS drafts: a prior of one half can
            # keep a good proposer from ever being chosen, and under sampling only a verified
            # draft teaches it.
            untimed = [n for n in names if n not in used and (n, state.greedy) in self.unlearned
                       and costs.dear(n, kmax(n))]
            untimed.sort(key=lambda n: (n not in state.warm, self.tries[(n, state.greedy)]))
        state.timing = bool(untimed)
        if untimed:  # worth one request's try as soon as it is affordable
            state.exploring = untimed[0]
            state.why = "time" if untimed[0] not in costs.propose else "learn"
            # learning tries alternate four tokens and two: calls of two lengths tell the cost
            # per draft token from the cost per call (one length leaves that to the prior)
            tries = self.tries[(untimed[0], state.greedy)] if state.why == "learn" else 0
            return untimed[0], min(4 if tries % 2 == 0 else 2, kmax(untimed[0]))
        if state.retry_at and step >= state.retry_at:
            # only proposers the shadow does not keep measuring for every request are retried:
            # a cheap one's acceptance for this request is current anyway
            dear_ones = [n for n in names if n not in used and costs.dear(n, kmax(n))]
            if not dear_ones:
                state.retry_at = 0  # nothing to retry; rescheduled while it does not speculate
                return None
            name = dear_ones[state.retries % len(dear_ones)]
            state.exploring, state.why = name, "retry"
            return name, min(2, kmax(name))
        # a random try goes to a proposer the shadow does not keep measuring: a cheap one's
        # drafts are scored in hindsight for every request already (on sampled chat half the
        # random tries verified a cheap draft, paid for in the forward, and learned nothing new)
        # (a sampled request's try is verified, and its plan leans towards what it knows little
        # of anyway -- the hope, spec_sdk.adaptive_estimates -- but without its tries a dear
        # proposer it stopped asking keeps the cost it was last timed at: on sampled chat with
        # a second job on the machine, one such run priced the draft model out and drafted a
        # speculator that pays a third as well, at 0.98x of target-only)
        dear = [n for n in names if costs.dear(n, kmax(n))] if self.explore else []
        if dear and self.rng.random() < self.explore:
            name = self.rng.choice(dear)
            state.exploring, state.why = name, "random"
            return name, self.rng.randint(1, kmax(name))
        return None

    def judge(self, state: RequestState, name: str, drafted: int, accepted: int, batch_rate: float,
              extra: float) -> None:
        """An exploration's outcome. Worth it, had it been chosen? Its accepted tokens against what
        its draft tokens and call cost (`extra` seconds), at the batch's rate. Explorations that
        keep finding nothing worth it (a loaded machine, a workload no proposer helps) slow down
        to 1/16 of `explore`; one that finds something restores the pace."""
        self.explorations += 1
        if not state.timing:  # one run to time or first learn a proposer teaches the pace nothing
            self.budget.judge(accepted >= extra * batch_rate)
        paid = drafted > 0 and accepted * 2 >= drafted
        state.retry_gap = self.retry_after if paid else min(max(state.retry_gap, self.retry_after) * 2, 1024)
