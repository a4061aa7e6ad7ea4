"""What one request's step teaches the adaptive policy of acceptance: its verified draft, the
drafts it had in hand, its shadows' drafts scored in hindsight, and the proposers asked that
had no draft."""

from __future__ import annotations

from collections.abc import Callable

from spec_sdk.adaptive_estimates import Estimates
from spec_sdk.adaptive_hand import HandJudge
from spec_sdk.adaptive_state import RequestState, asked_within
from spec_sdk.policy import Outcome


def learn_acceptance(est: Estimates, hand: HandJudge, state: RequestState, o: Outcome, asked: int,
                     kmax: Callable[[str], int]) -> tuple[int, int] | None:
    """Learn from `o`, the request's outcome; `asked`: the tokens the plan asked of the verified
    proposer (0 if the draft was not the plan's). Returns the greedy probe's (drafted, matched)
    tokens when its draft was scored in hindsight, else None."""
    held = state.held.get(o.proposer) if o.proposer is not None else None
    in_hindsight = o.proposer in state.shadows and held is not None and not held[2]
    if o.proposer is not None and o.drafted and not in_hindsight:
        # (a greedy shadow's verified draft is counted once, below, in hindsight: the same
        # draft, seen as far as the step emitted)
        # (what the engine really asked for: a draft cut short by the room left near a
        # request's end did not run out, and counted so it was a rejection that never
        # happened, at the positions that decide between k=3 and k=4)
        est.verified(state, o, asked_within(asked, state.room))
    hand.learn(state.held, state.greedy, o.proposer if o.drafted else None, o.drafted, o.accepted, o.tokens)
    probe = None
    for n in state.shadows:
        if n not in state.held or state.held[n][2]:
            continue  # no draft, or a sampled one: a match is not acceptance (a timing probe's)
        draft = state.held[n][0]
        matched = est.hindsight(state, n, draft, o, asked_within(kmax(n), state.room))
        if n == state.probe:
            probe = (len(draft), matched)
    for n in state.asked:
        if n not in state.held and state.budgets.get(n, 0) > 0:
            est.no_draft(state, n, o.greedy)
    return probe
