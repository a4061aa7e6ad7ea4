"""Which requests explore this step, and how: the adaptive policy's explorations (what to
try is spec_sdk.adaptive_explore's; here each try is priced, afforded from the budget, and put
in the step -- verified, its draft in the forward, or in the shadow, scored in hindsight)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from spec_sdk.adaptive_cost import Costs
from spec_sdk.adaptive_explore import Explorer
from spec_sdk.adaptive_plan import BatchPlan
from spec_sdk.adaptive_state import CREDIT_STEPS, RequestState

# explorations verify (their drafts enter the forward) until this many forwards with drafts
# were timed: fewer cannot tell what a draft token costs from the noise of one step
_MEASURE_DRAFTS = 8


def explorations(ex: Explorer, costs: Costs, states: Sequence[RequestState], asleep: set[int], order: Sequence[int],
                 names: Sequence[str], explorable: Sequence[str], gains: Mapping[str, list[list[float]]],
                 plan: BatchPlan, step: int, kmax: Callable[[str], int]) -> tuple[list[tuple[str | None, int]], set[int]]:
    """This step's explorations, request by request in `order` (asleep ones skipped): the batch's
    choices with the verified ones in place (the others (None, 0)) and the indices of those (the
    plan's ascent keeps them); a try in the shadow is left in its request's `probe`. `plan`:
    what draft tokens add to this forward; `gains[n][i][k]`: request i's expected tokens with k
    tokens of n."""
    assert costs.score is not None
    choice: list[tuple[str | None, int]] = [(None, 0)] * len(states)
    forced: set[int] = set()
    quiet_rate = len(states) / max(plan.base, 1e-9)  # the batch's tokens per second without drafts
    drafted = 0  # draft tokens the explorations put in the forward so far
    used: set[str] = set()  # proposers some explorer already pays the call of
    unaffordable: set[str] = set()  # untimed proposers too dear this step: others get a turn
    # A proposer's first call for a request is cold (fills its cache) and times nothing
    # typical: an untimed proposer is asked again for a request it is warm for, first; and
    # so is a dear one still to be learned (a draft model's warm try costs a fifth of a cold one)
    untimed = set(names) - set(costs.propose)
    learnable = untimed | {n for n, _ in ex.unlearned if n in explorable and costs.dear(n, kmax(n))}
    for i in sorted(order, key=lambda i: not learnable & states[i].warm):
        states[i].exploring = None
        if i in asleep:
            continue
        pick = ex.pick(states[i], explorable, used | unaffordable, step, costs, kmax)
        if pick is None:
            continue
        name, k = pick
        # A greedy request explores in the shadow: the draft is asked for and scored in
        # hindsight, never verified -- for greedy decoding the same knowledge, without the
        # draft tokens in the forward. A sampled one must verify: acceptance there is not a match.
        # ...unless the cost of a draft token was never measured: only a verified draft can.
        # A first timed call teaches its cost only: in the shadow for a sampled request too.
        shadow = ((states[i].greedy or states[i].why == "time")
                  and costs.score.drafted_steps >= _MEASURE_DRAFTS)
        cost = (0.0 if name in used else costs.call_cost(name, k))
        # a first call's cache fill is an investment the request keeps if the proposer pays:
        # spread like a decision's when a sampled request learns a proposer (it can learn a
        # model proposer only by verifying, and paying its prompt's prefill in full kept it
        # from ever trying); anything else pays it whole -- a greedy request's try is in the
        # shadow and keeps nothing unless the proposer is then chosen (charged a sixteenth,
        # the draft model's tries and probes took 3-8% of a 16-request run, over budget)
        learning = states[i].why in ("time", "learn") and not states[i].greedy
        cost += costs.cold_cost(states[i], name, spread=learning)

        def charge(kk: int) -> float:
            """What verifying kk tokens is expected to cost: the call, what the tokens add to
            the forward (the first draft in it makes it a forward with drafts), less what
            their expected accepted tokens are worth at the batch's rate -- an option near
            break-even costs little to try (a retry can then find out that it pays); never
            less than a twentieth of its cost."""
            if shadow:
                return cost
            full = cost + plan.draft_seconds(drafted + kk) - plan.draft_seconds(drafted)
            worth = max(gains[name][i][kk] - 1.0, 0.0) / quiet_rate if states[i].why != "time" else 0.0
            net = max(full - worth, 0.05 * full)
            if states[i].timing:
                # before a draft token's cost was measured it is priced like a request's (the
                # pessimistic prior), which may exceed any credit: what a full budget affords
                net = min(net, 0.75 * CREDIT_STEPS * costs.last_step)
            return net

        if not shadow and not states[i].timing and charge(k) > ex.budget.credit:
            # a one-token draft still measures and learns, for less; but not a proposer's
            # first timed calls: the prior of its call cost scales from their budget, and
            # one token's call would price every further token as most of a whole call
            k = 1
            pick = (name, k)
        if not ex.budget.afford(charge(k)):
            states[i].exploring = None
            if states[i].timing:
                unaffordable.add(name)
            continue  # not affordable now; a due retry stays due
        used.add(name)
        # what was afforded is a try: a learning try that did not fit is not one
        ex.why[states[i].why] += 1
        if states[i].timing:
            ex.tries[(name, states[i].greedy)] += 1
        if states[i].why == "retry":
            states[i].retries += 1
        if shadow:
            states[i].probe = name
        else:
            choice[i] = pick
            forced.add(i)
            drafted += k
        if states[i].retry_at and step >= states[i].retry_at:
            states[i].retry_at = 0
    return choice, forced
