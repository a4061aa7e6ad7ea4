"""The adaptive policy prices a whole step: the forward, and the rest of the step's work
(verification, bookkeeping, its own hooks), which costs more in a step with drafts
(spec_sdk.adaptive_cost)."""

from __future__ import annotations

import pytest

from spec_sdk.adaptive import AdaptivePolicy
from spec_sdk.adaptive_cost import Costs
from spec_sdk.policy import StepFeedback
from test_adaptive import _simulate


def test_what_drafts_add_to_the_rest_of_a_step_is_priced_with_them() -> None:
    # a forward of 10 ms and 1 ms a draft token; the rest 1 ms, and 2 ms in a step with drafts
    costs = Costs(longest=4)
    for step in range(300):
        d = step % 3
        costs.learn(StepFeedback(1, d, 0.010 + 0.001 * d, 0.001 + (0.001 if d else 0.0), {}, {}, []), {})
    plan = costs.plan(1)
    assert plan.draft_seconds(1) == pytest.approx(0.002, rel=0.05)
    assert plan.draft_seconds(2) == pytest.approx(0.003, rel=0.05)
    # a quiet step is not charged the drafting steps' rest
    assert costs.quiet_step(1) == pytest.approx(0.011, rel=0.05)


def test_a_draft_that_pays_for_its_forward_but_not_its_verification_is_not_made() -> None:
    # Half the drafted tokens are accepted, and a draft token adds 1 ms to a 10 ms forward: by
    # the forward alone two tokens pay (1.75 tokens in 12 ms against 1 in 10). But a step with
    # drafts costs 8 ms more of other work, and then nothing pays (1.75 in 20 ms).
    def drafted_share(rest_extra: float) -> float:
        policy = AdaptivePolicy(max_k=4, explore=0.02, seed=1)
        d = _simulate(policy, {"meh": 0.5}, (0.010, 0.0, 0.001), {"meh": 1e-6}, steps=300,
                      rest=(1e-3, rest_extra))
        return 1.0 - d[(None, 0)] / 300

    assert drafted_share(0.0) > 0.8  # (the machine without the extra rest: drafting pays)
    assert drafted_share(0.008) < 0.2
