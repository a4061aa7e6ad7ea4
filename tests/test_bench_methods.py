"""The bench's extra methods: the k sweep and the adaptive policy over every proposer."""

from __future__ import annotations

from spec_sdk.adaptive import AdaptivePolicy
from spec_sdk.bench import Method, adaptive_method, cascades, suffix_trees, sweep_methods
from spec_sdk.policy import FixedPolicy


def _methods() -> list[Method]:
    singles = [Method("suffix k=4", {"suffix": {}}, 4), Method("ngram k=4", {"ngram": {"max_n": 3}}, 4)]
    return singles + cascades(singles, 4)


def test_sweep_runs_each_single_proposer_at_each_other_k() -> None:
    swept = sweep_methods(_methods(), (2, 4, 8))
    assert [(m.name, m.k) for m in swept] == [("suffix k=2", 2), ("suffix k=8", 8), ("ngram k=2", 2), ("ngram k=8", 8)]
    assert swept[2].proposers == {"ngram": {"max_n": 3}}  # options carried over


def test_adaptive_method_gets_every_single_proposer_and_a_fresh_policy_each_time() -> None:
    m = adaptive_method(_methods(), max_k=6)
    assert m is not None and set(m.proposers) == {"suffix", "ngram"} and m.k == 6
    assert m.policy_factory is not None
    a, b = m.policy_factory(), m.policy_factory()
    assert isinstance(a, AdaptivePolicy) and a is not b and a.proposers == ["suffix", "ngram"] and a.max_k == 6
    assert adaptive_method([Method("x", {"ngram": {}}, 4, policy=FixedPolicy("ngram"))]) is None


def test_cascades_come_with_the_reference_bar_and_the_rate_bar_at_every_k() -> None:
    from spec_sdk.policy import CascadePolicy

    cas = cascades(_methods(), 4, sweep=(2, 4, 8))
    assert [(m.name, m.k) for m in cas] == [
        ("cascade suffix>ngram k=4", 4), ("cascade suffix>ngram rate k=4", 4),
        ("cascade suffix>ngram rate k=2", 2), ("cascade suffix>ngram rate k=8", 8),
        ("cascade suffix>ngram rate k=8/2", 8)]
    reference, rate4, _, rate8, mixed = cas
    assert reference.policy == CascadePolicy(("suffix", "ngram"), 4)
    assert rate4.policy is None and rate4.policy_factory is not None
    a, b = rate4.policy_factory(), rate4.policy_factory()
    assert a is not b and isinstance(a, CascadePolicy) and a.threshold == "rate" and a.stages == ("suffix", "ngram")
    assert a.k == 4 and rate8.policy_factory is not None and rate8.policy_factory().k == 8
    # the mixed one: the cheap stage at the longest draft of the sweep, the other at the shortest
    assert mixed.policy_factory is not None and mixed.policy_factory().k == (8, 2)
    assert mixed.policy_factory().threshold == "rate"
    assert [m.name for m in cascades(_methods(), 4)] == ["cascade suffix>ngram k=4", "cascade suffix>ngram rate k=4"]


def test_suffix_trees_come_at_the_default_and_the_longest_length() -> None:
    trees = suffix_trees(_methods(), (4, 8))
    assert [(m.name, m.k) for m in trees] == [("suffix tree k=4", 4), ("suffix tree k=8", 8)]
    assert all(m.proposers["suffix"]["tree"] is True and m.policy is None for m in trees)
    assert [m.name for m in suffix_trees(_methods(), (4, 4))] == ["suffix tree k=4"]
    assert suffix_trees([m for m in _methods() if "suffix" not in m.proposers], (4, 8)) == []

