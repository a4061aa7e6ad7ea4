"""What the adaptive policy explores at random (spec_sdk.adaptive_explore.Explorer.pick)."""

from __future__ import annotations

import random

from spec_sdk.adaptive_cost import Costs
from spec_sdk.adaptive_explore import Explorer
from spec_sdk.adaptive_state import ExploreBudget, RequestState
from spec_sdk.estimators import CostModel


def _costs(calls: dict[str, float], step: float = 0.02) -> Costs:
    """Costs with each proposer's warm call timed at `calls[name]` seconds, a step at `step`."""
    costs = Costs(8)
    costs.last_step = step
    for name, seconds in calls.items():
        costs.propose[name] = CostModel(prior=[((1.0, 0.0, 0.0, 0.0), seconds)])
    return costs


def test_random_tries_go_only_to_proposers_too_dear_for_the_shadow() -> None:
    """A cheap proposer is asked in the shadow and scored in hindsight for every request, so a
    random try of it learns nothing new (and a sampled request's is verified, its tokens paid for
    in the forward). Every random try goes to a dear proposer, at every
    length."""
    costs = _costs({"cheap": 1e-5, "dear": 0.005})
    assert not costs.dear("cheap", 8) and costs.dear("dear", 8)
    explorer = Explorer(1.0, 16, random.Random(0), ExploreBudget(1.0))
    picks = []
    for greedy in (True, False):
        for _ in range(200):
            state = RequestState(greedy)
            pick = explorer.pick(state, ["cheap", "dear"], set(), 1, costs, lambda n: 8)
            assert pick is not None and state.why == "random"
            picks.append(pick)
    assert {name for name, _ in picks} == {"dear"}
    assert {k for _, k in picks} == set(range(1, 9))


def test_no_random_try_when_every_proposer_is_cheap() -> None:
    costs = _costs({"ngram": 1e-5, "suffix": 2e-5})
    explorer = Explorer(1.0, 16, random.Random(0), ExploreBudget(1.0))
    for _ in range(100):
        state = RequestState(True)
        assert explorer.pick(state, ["ngram", "suffix"], set(), 1, costs, lambda n: 8) is None
        assert state.exploring is None
