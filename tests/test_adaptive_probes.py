"""The adaptive policy's probes (a step of the whole batch without drafts) come further apart
while the forward costs what the fit says, and as often as before when it does not
(spec_sdk.adaptive_state.ProbeSchedule)."""

from __future__ import annotations

from spec_sdk.adaptive import AdaptivePolicy
from spec_sdk.adaptive_state import PROBE_STRETCH, ProbeSchedule
from test_adaptive import _simulate


def test_probes_stretch_while_they_agree_and_snap_back_when_they_do_not() -> None:
    p = ProbeSchedule(64)
    assert not p.due(63) and p.due(64)
    gaps = []
    for _ in range(5):
        p.judge(p.next_at, 0.010, 0.0102)
        gaps.append(p.gap)
    assert gaps == [128, 256, 512, 512, 512] and PROBE_STRETCH * 64 == 512
    p.judge(p.next_at, 0.010, 0.013)  # the forward got 30% dearer: probe often again
    assert p.gap == 64
    assert not ProbeSchedule(0).due(10**6)


def test_a_steady_machine_is_probed_less_and_a_noisy_one_as_often() -> None:
    steady = AdaptivePolicy(max_k=4, explore=0.0)
    _simulate(steady, {"good": 0.8}, (0.01, 0.0, 0.0005), {"good": 1e-5}, steps=1500)
    assert steady._probes.gap == PROBE_STRETCH * steady.probe_every
    noisy = AdaptivePolicy(max_k=4, explore=0.0)
    _simulate(noisy, {"good": 0.8}, (0.01, 0.0, 0.0005), {"good": 1e-5}, steps=1500, noise=0.5)
    assert noisy._probes.gap < PROBE_STRETCH * noisy.probe_every
