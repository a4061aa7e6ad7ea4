"""Policies: the fixed policy and the confidence cascade, alone and inside the engine."""

from __future__ import annotations

from collections import Counter

import anyio
import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from spec_sdk import CascadePolicy, Draft, FixedPolicy, Load, SamplingParams, SpecEngine
from spec_sdk.errors import ConfigError
from spec_sdk.cascade_rate import RATE_AFTER
from spec_sdk.policy import DEFER, MEASURED_AFTER, Outcome, StepFeedback
from spec_sdk.proposers.ngram import NgramProposer
from spec_sdk.testing import (
    OracleProposer,
    RandomProposer,
    TableTarget,
    chi_square,
    exact_sequence_distribution,
    greedy_next_fn,
    reference_greedy,
    run_concurrently,
    tie_aware_equal,
)
from spec_sdk.testing.strategies import prompts


class _Scored(RandomProposer):
    """Random drafts whose score is whatever the test says (to drive the cascade)."""

    def __init__(self, name: str, vocab_size: int, score: float, seed: int = 0) -> None:
        super().__init__(vocab_size, seed=seed)
        self.name = name
        self.fixed_score = score

    def _draft(self, req, budget):
        draft = super()._draft(req, budget)
        return None if draft is None else attrs.evolve(draft, score=self.fixed_score, source=self.name)


def _d(score: float) -> Draft:
    return Draft(tokens=[1, 2], score=score)


def test_cascade_choose_rule():
    policy = CascadePolicy(("cheap", "model"), k=4)
    view = None  # the cascade does not look at the request
    assert policy.plan(view, Load(1)) == {"cheap": 4, "model": 4}
    good, poor, model = _d(4.0), _d(1.0), _d(2.5)
    assert policy.choose(view, {"cheap": good}) is good  # score >= the model's k: taken at once
    assert policy.choose(view, {"cheap": poor}) is DEFER
    assert policy.choose(view, {"cheap": None}) is DEFER
    assert policy.choose(view, {"cheap": poor, "model": model}) is model  # the last stage's draft
    assert policy.choose(view, {"cheap": good, "model": model}) is model  # even if an earlier one scored more
    assert policy.choose(view, {"cheap": poor, "model": None}) is poor  # else the best earlier one
    assert policy.choose(view, {"cheap": None, "model": None}) is None
    assert CascadePolicy(("a", "b"), threshold=0.5).choose(view, {"a": poor}) is poor
    with pytest.raises(ConfigError):
        CascadePolicy(())
    with pytest.raises(ConfigError):
        CascadePolicy(("a", "b"), k=(1, 2, 3))


def test_cascade_measured_bar_follows_what_the_model_stage_gets_accepted():
    policy = CascadePolicy(("cheap", "model"), k=4, threshold="measured")
    view = None
    modest = _d(1.5)
    assert policy.choose(view, {"cheap": modest}) is DEFER  # the default bar (k = 4) until measured

    def step(accepted: int) -> StepFeedback:
        return StepFeedback(1, 4, 0.01, 0.0, {}, {}, [Outcome("r", "model", 4, accepted, accepted + 1, True)])

    for _ in range(MEASURED_AFTER - 1):
        policy.feedback(step(1))
    assert policy.choose(view, {"cheap": modest}) is DEFER  # not enough drafts measured yet
    policy.feedback(step(1))
    assert policy.choose(view, {"cheap": modest}) is modest  # the model gets 1 accepted: 1.5 beats it
    for _ in range(200):
        policy.feedback(step(4))
    assert policy.choose(view, {"cheap": modest}) is DEFER  # the model is good again
    # cheap drafts' outcomes do not move the bar; a fixed threshold ignores feedback
    policy.feedback(StepFeedback(1, 4, 0.01, 0.0, {}, {}, [Outcome("r", "cheap", 4, 0, 1, True)] * 50))
    assert policy.choose(view, {"cheap": modest}) is DEFER
    fixed = CascadePolicy(("cheap", "model"), k=4, threshold=1.0)
    fixed.feedback(step(0))
    assert fixed.choose(view, {"cheap": modest}) is modest
    with pytest.raises(ConfigError):
        CascadePolicy(("a", "b"), threshold="learned")  # type: ignore[arg-type]


def _view(rid: str, greedy: bool = True):
    from spec_sdk.proposers.base import RequestView
    from spec_sdk.types import SpecStats

    params = SamplingParams() if greedy else SamplingParams(temperature=0.8)
    return RequestView(rid, [1, 2, 3], 3, params, SpecStats())


def _rate_step(policy: CascadePolicy, view, cheap: Draft, model: Draft | None, emitted: tuple[int, ...],
               cheap_s: float, model_s: float, score_s: float = 0.010) -> None:
    """One step of one request through the cascade: it decides, then hears what the step cost."""
    got = policy.choose(view, {"cheap": cheap})
    asked = {"cheap": cheap_s}
    if got is DEFER:
        got = policy.choose(view, {"cheap": cheap, "model": model})
        asked["model"] = model_s
    source = "cheap" if got is cheap else "model"
    accepted = len(emitted) - 1
    policy.feedback(StepFeedback(1, len(got), score_s, 0.0, asked, {n: (1, 4) for n in asked},
                                 [Outcome(view.id, source, len(got), accepted, len(emitted), view.params.greedy,
                                          emitted)]))


def test_cascade_rate_bar_weighs_what_the_model_stage_costs():
    """A model stage that accepts 3 tokens but costs three forwards is beaten by a cheap draft
    that really gets ~1.5 accepted; made cheap, the same model stage wins again."""
    view = _view("r")
    cheap = Draft(tokens=[5, 6, 8, 8], score=1.5)  # matches the first two emitted tokens below
    model = Draft(tokens=[5, 6, 7, 9], score=3.0)
    emitted = (5, 6, 7, 1)  # the model's draft: 3 accepted, and the correction

    dear = CascadePolicy(("cheap", "model"), k=4, threshold="rate")
    assert dear.choose(view, {"cheap": cheap}) is DEFER  # the default bar (k = 4) until measured
    for _ in range(RATE_AFTER):
        _rate_step(dear, view, cheap, model, emitted, cheap_s=0.0001, model_s=0.030)
    # cheap: (1 + 2/1.5 * 1.5) / 0.0101 s ~ 297 tok/s; model: 4 / 0.0401 s ~ 100 tok/s
    assert dear.choose(view, {"cheap": cheap}) is cheap
    report = dear.report()["stages"]
    assert report["cheap"]["accepted_per_score"] == pytest.approx(2 / 1.5)  # learned in hindsight
    assert report["model"]["tokens_per_second"] == pytest.approx(4 / 0.0401)

    cheap_model = CascadePolicy(("cheap", "model"), k=4, threshold="rate")
    for _ in range(RATE_AFTER):
        _rate_step(cheap_model, view, cheap, model, emitted, cheap_s=0.0001, model_s=0.0005)
    assert cheap_model.choose(view, {"cheap": cheap}) is DEFER  # ~380 tok/s beats ~297

    # greedy and sampled requests are learned apart: a sampled request is on the default bar still
    assert dear.choose(_view("s", greedy=False), {"cheap": cheap}) is DEFER


def test_cascade_rate_bar_learns_from_the_cheap_stage_s_own_steps():
    """Once the cheap draft is taken, its verified outcomes calibrate its score: one that
    scores high but gets nothing accepted loses the bar again."""
    view = _view("r")
    policy = CascadePolicy(("cheap", "model"), k=4, threshold="rate")
    liar = Draft(tokens=[5, 6, 7, 8], score=1.5)
    for _ in range(RATE_AFTER):
        _rate_step(policy, view, liar, Draft(tokens=[5, 6, 7, 9], score=3.0), (5, 6, 7, 1), 0.0001, 0.030)
    assert policy.choose(view, {"cheap": liar}) is liar
    for _ in range(300):  # taken each time; the target rejects its first token every time
        _rate_step(policy, view, liar, None, (9,), 0.0001, 0.030)
    assert policy.report()["stages"]["cheap"]["accepted_per_score"] < 0.05
    assert policy.choose(view, {"cheap": liar}) is DEFER


def test_cascade_rate_bar_rises_while_the_drafts_it_lets_through_are_slower():
    """Under sampling a cheap draft's acceptance is not proportional to its score (a suffix
    draft scoring 6 is not accepted six times as much as one scoring 1), so the computed bar can
    let through drafts whose steps emit more slowly than deferring would: while they do, the
    bar rises; once they are faster, it falls back -- never below the computed one."""
    from spec_sdk.cascade_rate import StageRates, _Seen

    rates = StageRates(("cheap", "model"))
    cheap = _Seen(emitted=1.5, seconds=0.02, used=RATE_AFTER, stop_seconds=0.02, stops=1.0,
                  accepted=2.0, scored=4.0, judged=RATE_AFTER)
    model = _Seen(emitted=2.2, seconds=0.025, used=RATE_AFTER)
    rates._seen[("cheap", False)], rates._seen[("model", False)] = cheap, model
    computed = rates.bar("cheap", "model", False)
    assert computed is not None and computed > 0
    for _ in range(10):  # cheap steps: 75 tok/s against the model's 88
        rates._adjust("cheap", False)
    raised = rates.bar("cheap", "model", False)
    assert raised is not None and raised > 1.5 * computed
    assert rates.report()["cheap (sampled)"]["bar_raised"] > 1.5
    cheap.emitted = 3.0  # now 150 tok/s: the bar falls back, to the computed one and no lower
    for _ in range(40):
        rates._adjust("cheap", False)
    assert rates.bar("cheap", "model", False) == pytest.approx(computed)
    rates._adjust("model", False)  # the last stage has no bar: nothing to adjust


@settings(max_examples=25, deadline=None)
@given(batch=st.lists(prompts(6, max_len=16), min_size=1, max_size=4), n_new=st.integers(1, 30))
def test_cascade_with_measured_bar_is_lossless_greedy(batch, n_new):
    target = TableTarget(vocab_size=6, order=2, seed=7)
    proposers = [NgramProposer(), _Scored("random", 6, 0.2, seed=5)]
    policy = CascadePolicy(("ngram", "random"), k=3, threshold="measured")
    params = [SamplingParams(max_new_tokens=n_new)] * len(batch)
    done, _ = anyio.run(lambda: run_concurrently(target, proposers, batch, params, 3, policy=policy))
    for prompt, c in zip(batch, done, strict=True):
        ref, margins = reference_greedy(target, prompt, n_new)
        assert tie_aware_equal(list(c.token_ids), ref, margins)


@pytest.mark.parametrize("cheap_score, model_calls_expected", [(10.0, False), (0.5, True)])
def test_engine_asks_the_next_stage_only_when_needed(cheap_score, model_calls_expected):
    target = TableTarget(vocab_size=6, order=2, seed=1)
    cheap = _Scored("cheap", 6, cheap_score, seed=1)
    model = _Scored("model", 6, 1.0, seed=2)
    prompt = [1, 2, 3]
    ref, margins = reference_greedy(target, prompt, 20)

    async def run():
        async with SpecEngine(target, proposers=[cheap, model], policy=CascadePolicy(("cheap", "model"), k=3)) as e:
            return await e.generate(prompt, max_new_tokens=20), e.metrics()

    done, metrics = anyio.run(run)
    assert tie_aware_equal(list(done.token_ids), ref, margins)
    assert cheap.calls["propose"] > 0
    assert (model.calls["propose"] > 0) == model_calls_expected
    assert ("model" in metrics.proposers) == model_calls_expected


@settings(max_examples=40)
@given(batch=st.lists(prompts(6, max_len=16), min_size=1, max_size=5), n_new=st.integers(1, 24))
def test_cascade_switching_proposers_is_lossless_greedy(batch, n_new):
    """ngram's score varies with its match, so the cascade really switches mid-request."""
    target = TableTarget(vocab_size=6, order=2, seed=7)
    proposers = [NgramProposer(), OracleProposer(greedy_next_fn(target))]
    proposers[1].name = "oracle"
    policy = CascadePolicy(("ngram", "oracle"), k=3, threshold=1.2)
    params = [SamplingParams(max_new_tokens=n_new)] * len(batch)
    done, _ = anyio.run(lambda: run_concurrently(target, proposers, batch, params, 3, policy=policy))
    for prompt, c in zip(batch, done, strict=True):
        ref, margins = reference_greedy(target, prompt, n_new)
        assert tie_aware_equal(list(c.token_ids), ref, margins)


def test_cascade_sampling_follows_target_distribution():
    target = TableTarget(vocab_size=5, order=2, seed=3)
    params = SamplingParams(temperature=0.9, top_p=0.9, max_new_tokens=3)
    exact = exact_sequence_distribution(target, [1, 2, 3], 3, params)
    n = 3000
    proposers = [NgramProposer(min_n=1, max_n=2), _Scored("random", 5, 0.2, seed=4)]
    policy = CascadePolicy(("ngram", "random"), k=2, threshold=0.1)
    all_params = [attrs.evolve(params, seed=i) for i in range(n)]
    done, metrics = anyio.run(lambda: run_concurrently(target, proposers, [[1, 2, 3]] * n, all_params, 2, policy=policy))
    counts = Counter(tuple(c.token_ids) for c in done)
    _, _, p = chi_square(counts, exact, n)
    assert p > 1e-4
    assert set(metrics.proposers) == {"ngram", "random"}  # both stages' drafts were verified


def test_fixed_policy_target_only():
    assert FixedPolicy(None).plan(None, Load(1)) == {}
    assert FixedPolicy("ngram", 0).plan(None, Load(1)) == {}


def test_bench_builds_a_cascade_per_other_proposer():
    from spec_sdk.bench import Method, cascades

    methods = [Method("suffix k=4", {"suffix": {"tree": False}}, 4), Method("ngram k=4", {"ngram": {}}, 4)]
    cascade, rate = cascades(methods, 4)  # the reference bar, and the rate bar
    assert cascade.proposers == rate.proposers == {"suffix": {"tree": False}, "ngram": {}}
    assert cascade.policy == CascadePolicy(("suffix", "ngram"), 4)
    assert cascades(methods[1:], 4) == []
