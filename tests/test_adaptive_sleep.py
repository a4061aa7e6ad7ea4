"""The adaptive policy leaves a request alone while speculation gains it nothing, and wakes it
to look again (spec_sdk.adaptive_sleep)."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

import spec_sdk.adaptive_sleep as sleep_mod
from spec_sdk.adaptive import AdaptivePolicy
from spec_sdk.adaptive_sleep import AWAKE_STEPS, FIRST_GAP, FIRST_LOOK, MAX_GAP, Gains, Sleep
from spec_sdk.policy import Load
from spec_sdk.proposers.base import RequestView
from test_adaptive import _simulate

_MACHINE = ((0.002, 0.001, 0.0005), {"cheap": 1e-6})  # score a + b*batch + c*draft tokens; a call


class _Counting(AdaptivePolicy):
    """Counts the steps on which the policy asked any proposer for a request."""

    asked_steps = 0

    def plan(self, req: RequestView, load: Load) -> Mapping[str, int]:
        out = super().plan(req, load)
        type(self).asked_steps += bool(out)
        return out


def _assert_awake_then_asleep(s: Sleep, awake: int, gap: int) -> None:
    """From step 1, finding nothing: awake through step `awake`, then asleep for `gap` steps."""
    for step in range(1, awake):
        s.record(step, 0, may_sleep=True, tried=True)
        assert not s.asleep(step + 1)
    s.record(awake, 0, may_sleep=True, tried=True)
    assert s.asleep(awake + 1) and s.asleep(awake + gap)
    assert not s.asleep(awake + gap + 1)


def test_a_sleep_doubles_up_to_its_cap_and_one_accepted_token_resets_it() -> None:
    s = Sleep(gain=0.0)
    _assert_awake_then_asleep(s, AWAKE_STEPS, FIRST_GAP)
    gaps = []
    for _ in range(4):
        gaps.append(s.gap)
        step = s.until
        for i in range(AWAKE_STEPS):
            s.record(step + i, 0, may_sleep=True, tried=True)
    assert gaps == [2 * FIRST_GAP, min(4 * FIRST_GAP, MAX_GAP), MAX_GAP, MAX_GAP]
    s.record(s.until, 1, may_sleep=True, tried=True)  # an accepted token: awake, and the next sleep short again
    assert s.gain >= sleep_mod.DORMANT_GAIN and s.gap == FIRST_GAP and not s.asleep(s.until)
    # nobody sleeps while something is still to be learned
    fresh = Sleep(gain=0.0)
    for step in range(1, 100):
        fresh.record(step, 0, may_sleep=False, tried=True)
    assert not fresh.asleep(100)


def test_a_look_that_put_nothing_to_the_test_does_not_end_in_sleep() -> None:
    """No draft verified and the priced proposers never all asked: the look is the plan's
    estimate, not a finding, and the request stays awake until a step tests it."""
    s = Sleep(gain=0.0)
    for step in range(1, 3 * AWAKE_STEPS):
        s.record(step, 0, may_sleep=True, tried=False)
        assert not s.asleep(step + 1)
    s.record(3 * AWAKE_STEPS, 0, may_sleep=True, tried=True)  # e.g. a retry verified a draft: nothing
    assert s.asleep(3 * AWAKE_STEPS + 1)
    # after the sleep the test starts over
    for step in range(s.until, s.until + 2 * AWAKE_STEPS):
        s.record(step, 0, may_sleep=True, tried=False)
        assert not s.asleep(step + 1)


def test_a_new_request_starts_at_what_its_kind_gained_lately() -> None:
    gains = Gains()
    assert gains.start(True).gain == 1.0  # nothing known: it must show it does not gain
    for _ in range(500):
        gains.add(False, 0)
    assert gains.start(False).gain < 0.01 and gains.start(True).gain == 1.0


def test_a_new_request_looks_briefly_then_sleeps_as_long_as_its_kind_last_slept() -> None:
    gains = Gains()
    gains.add(False, 0, Sleep(gain=0.01, gap=MAX_GAP))
    assert gains.by_kind[False] > sleep_mod.DORMANT_GAIN  # the kind's gain falls slowly
    s = gains.start(False)
    assert s.gain == 0.01
    _assert_awake_then_asleep(s, FIRST_LOOK, MAX_GAP)
    # where the last requests of the kind gained, or never slept, a new one starts over
    gains.add(False, 1, Sleep(gain=0.2, gap=FIRST_GAP))
    assert gains.start(False).gap == FIRST_GAP and gains.start(False).awake == 0
    assert Gains().start(True) == Sleep(gain=1.0)


def test_the_next_request_where_nothing_pays_is_asked_on_few_of_its_steps() -> None:
    """After a request that found nothing for 300 steps, the next one (96 steps long) is asked
    on its first FIRST_LOOK steps and one waking at most, not woken every FIRST_GAP-doubling
    sleep from the start (8 + 8 + 8 of its 96 steps)."""
    policy = _Counting(max_k=4, explore=0.02)
    _simulate(policy, {"cheap": 0.0}, *_MACHINE, batch=1, steps=300)
    policy.forget("r0")
    _Counting.asked_steps = 0
    _simulate(policy, {"cheap": 0.0}, *_MACHINE, batch=1, steps=96, seed=1)
    assert FIRST_LOOK <= _Counting.asked_steps <= FIRST_LOOK + AWAKE_STEPS


@pytest.mark.parametrize("greedy", [True, False])
def test_where_no_draft_is_ever_accepted_the_policy_mostly_leaves_the_request_alone(greedy, monkeypatch) -> None:
    """A cheap proposer whose drafts are never accepted: with sleeping, it is asked on a small
    share of the steps; without (a gain no request falls below), on nearly every step."""

    def asked(share_floor: float) -> float:
        monkeypatch.setattr(sleep_mod, "DORMANT_GAIN", share_floor)
        _Counting.asked_steps = 0
        policy = _Counting(max_k=4, explore=0.02)
        _simulate(policy, {"cheap": 0.0}, *_MACHINE, batch=1, steps=400, greedy=greedy)
        return _Counting.asked_steps / 400

    assert asked(-1.0) > 0.9
    assert asked(0.05) < 0.35


def test_a_request_that_sleeps_wakes_to_a_proposer_that_starts_to_pay() -> None:
    """Nothing accepted for 300 steps, then most drafts follow the text and say so in their score
    (a suffix match that got long): the request, asleep by then, wakes within a sleep's length
    and drafts from then on."""
    policy = AdaptivePolicy(max_k=4, explore=0.02)
    _simulate(policy, {"cheap": 0.0}, *_MACHINE, batch=1, steps=300)
    state = policy._requests["r0"]
    assert state.sleep is not None and state.sleep.gap == MAX_GAP
    later = _simulate(policy, {"cheap": 0.0}, *_MACHINE, batch=1, steps=200, seed=1, strong=0.9)
    assert sum(c for (name, k), c in later.items() if name == "cheap" and k >= 2) > 120
    assert state.sleep.gap == FIRST_GAP


def test_a_kind_that_slept_is_not_kept_asleep_by_looks_that_drafted_nothing() -> None:
    """A dear proposer (a draft model) that paid nothing for 400 steps puts the request to sleep;
    then it pays, for the next six sampled requests. Each of them inherits the sleep and looks
    for FIRST_LOOK steps -- in which the plan, still expecting nothing of it, drafts nothing.
    Slept on such looks, each request handed the sleep on and the kind slept through ~80% of
    its steps (explored only in the few awake ones); awake, it is explored and gets drafts."""
    machine = ((0.002, 0.001, 0.0005), {"cheap": 1e-6, "dear": 0.002})
    for seed in range(2):
        policy = AdaptivePolicy(max_k=4, explore=0.02, seed=seed)
        _simulate(policy, {"cheap": 0.0, "dear": 0.0}, *machine, batch=1, steps=400, greedy=False, seed=seed)
        state = policy._requests["r0"]
        assert state.sleep is not None and state.sleep.gap == MAX_GAP  # it did sleep: this is the case
        before = policy.report()
        for r in range(6):
            policy.forget("r0")
            _simulate(policy, {"cheap": 0.0, "dear": 0.8}, *machine, batch=1, steps=96, greedy=False,
                      seed=100 + r + 10 * seed)
        after = policy.report()
        slept = after["asleep_share"] * after["steps"] - before["asleep_share"] * before["steps"]
        assert slept / (after["steps"] - before["steps"]) < 0.3


def test_requests_that_gain_never_sleep() -> None:
    policy = AdaptivePolicy(max_k=4, explore=0.02)
    d = _simulate(policy, {"cheap": 0.8}, *_MACHINE, batch=4, steps=300)
    assert all(s.sleep is not None and s.sleep.until == 0 for s in policy._requests.values())
    assert sum(c for (name, _), c in d.items() if name == "cheap") > 0.9 * 4 * 300


def test_with_explore_zero_a_proposer_never_learned_does_not_keep_requests_awake() -> None:
    """`explore=0`: nothing pays for learning tries, so a dear proposer is never learned. Waiting
    for it to be kept every request awake for good, at the policy's full cost every step."""
    policy = AdaptivePolicy(max_k=4, explore=0.0)
    machine = ((0.002, 0.001, 0.0005), {"cheap": 1e-6, "dear": 0.004})
    _simulate(policy, {"cheap": 0.0, "dear": 0.5}, *machine, batch=1, steps=400, greedy=False)
    assert policy._explorer.why.get("learn", 0) == 0  # it was never learned
    assert policy.report()["asleep_share"] > 0.5
