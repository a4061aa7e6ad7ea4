"""warp_probs against transformers' own warpers, and the draws made from it."""

from __future__ import annotations

import math
from typing import Iterator

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from spec_sdk.types import SamplingParams
from spec_sdk.verify import make_generator, sample, sample_with_uniforms, warp_probs

# At least these many cases; a profile that asks for more (conftest's "thorough") gets more.
SETTINGS = settings(max_examples=max(200, settings.default.max_examples), deadline=None)
BATCH_SETTINGS = settings(max_examples=max(100, settings.default.max_examples), deadline=None)

# Vocabularies stay <= 16: there torch's CPU sort (used by TopPLogitsWarper) is stable, so even
# tied logits have one right answer to compare against.
MAX_VOCAB = 8


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """These tensors are tiny: intra-op threads gain nothing, and on a busy shared machine every
    parallel region waits for a descheduled worker (milliseconds per op). Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def reference_probs(row: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """The distribution generate() samples from, with its warpers built as generate() builds them."""
    warpers: list = []
    if params.temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(float(params.temperature)))
    if params.top_k != 0:
        warpers.append(TopKLogitsWarper(top_k=params.top_k))
    if params.top_p < 1.0:
        warpers.append(TopPLogitsWarper(top_p=params.top_p))
    warpers.append(MinPLogitsWarper(min_p=params.min_p))
    scores = row.unsqueeze(0).clone()
    input_ids = torch.zeros(1, 0, dtype=torch.int64)
    for warper in warpers:
        scores = warper(input_ids, scores)
    return scores.softmax(dim=-1)[0]


# Ties and -inf (a masked vocabulary entry) are where filters are easiest to get subtly wrong.
logit_value = st.one_of(
    st.floats(-8.0, 8.0, allow_nan=False),
    st.sampled_from([0.0, 1.0, -1.0, 2.5]),
    st.just(-math.inf),
)


@st.composite
def logit_rows(draw: st.DrawFn, vocab: int, rows: int) -> torch.Tensor:
    row = st.lists(logit_value, min_size=vocab, max_size=vocab).filter(lambda xs: any(math.isfinite(x) for x in xs))
    return torch.tensor([draw(row) for _ in range(rows)], dtype=torch.float64)


@st.composite
def sampling_params(draw: st.DrawFn, vocab: int) -> SamplingParams:
    return SamplingParams(
        temperature=draw(st.one_of(st.floats(0.05, 3.0, exclude_min=True), st.just(1.0))),
        top_k=draw(st.integers(0, vocab + 1)),
        top_p=draw(st.one_of(st.floats(0.0, 1.0, exclude_min=True), st.sampled_from([1.0, 0.5, 0.25]))),
        min_p=draw(st.one_of(st.floats(0.0, 1.0, exclude_max=True), st.just(0.0))),
    )


@SETTINGS
@given(data=st.data())
def test_matches_transformers_warpers(data: st.DataObject) -> None:
    vocab = data.draw(st.integers(1, MAX_VOCAB))
    logits = data.draw(logit_rows(vocab, data.draw(st.integers(1, 3))))
    params = data.draw(sampling_params(vocab))
    got = warp_probs(logits, params)
    assert got.dtype == torch.float64
    for row, probs in zip(logits, got):
        torch.testing.assert_close(probs, reference_probs(row, params), atol=1e-12, rtol=0)


@BATCH_SETTINGS
@given(data=st.data())
def test_per_row_params_equal_row_by_row(data: st.DataObject) -> None:
    vocab = data.draw(st.integers(1, MAX_VOCAB))
    n = data.draw(st.integers(1, 5))
    logits = data.draw(logit_rows(vocab, n))
    params = [data.draw(sampling_params(vocab)) for _ in range(n)]
    batched = warp_probs(logits, params)
    for i in range(n):
        torch.testing.assert_close(batched[i], warp_probs(logits[i : i + 1], params[i])[0], atol=1e-12, rtol=0)
        torch.testing.assert_close(batched[i], reference_probs(logits[i], params[i]), atol=1e-12, rtol=0)


def test_filters_on_a_known_row() -> None:
    # probs of these logits at T=1: about [0.032, 0.087, 0.237, 0.644]
    logits = torch.tensor([[0.0, 1.0, 2.0, 3.0]], dtype=torch.float64)
    support = lambda params: (warp_probs(logits, params)[0] > 0).tolist()  # noqa: E731
    assert support(SamplingParams(temperature=1.0, top_k=2)) == [False, False, True, True]
    assert support(SamplingParams(temperature=1.0, top_p=0.7)) == [False, False, True, True]
    assert support(SamplingParams(temperature=1.0, top_p=0.6)) == [False, False, False, True]
    assert support(SamplingParams(temperature=1.0, min_p=0.2)) == [False, False, True, True]
    assert support(SamplingParams(temperature=1.0, top_k=5)) == [True] * 4
    hot = warp_probs(logits, SamplingParams(temperature=0.1))[0]
    assert hot[3] > 0.9999


def test_ties_at_the_top_k_cut_are_kept() -> None:
    logits = torch.tensor([[1.0, 2.0, 2.0, 0.0]], dtype=torch.float64)
    probs = warp_probs(logits, SamplingParams(temperature=1.0, top_k=1))[0]
    torch.testing.assert_close(probs, torch.tensor([0.0, 0.5, 0.5, 0.0], dtype=torch.float64))


def test_greedy_and_malformed_input_raise() -> None:
    logits = torch.zeros(2, 4)
    with pytest.raises(ValueError):
        warp_probs(logits, SamplingParams(temperature=0.0))
    with pytest.raises(ValueError):
        warp_probs(logits, [SamplingParams(temperature=1.0), SamplingParams(temperature=0.0)])
    with pytest.raises(ValueError):
        warp_probs(logits, [SamplingParams(temperature=1.0)])
    with pytest.raises(ValueError):
        warp_probs(torch.zeros(4), SamplingParams(temperature=1.0))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_low_precision_logits_warp_in_float32(dtype: torch.dtype) -> None:
    logits = torch.tensor([[0.5, -1.0, 2.0, 1.25, 0.0]], dtype=dtype)
    params = SamplingParams(temperature=0.7, top_k=4, top_p=0.9, min_p=0.05)
    got = warp_probs(logits, params)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got[0].double(), reference_probs(logits[0].double(), params), atol=1e-6, rtol=0)


def test_inverse_cdf_picks_the_interval_u_falls_in() -> None:
    probs = torch.tensor([0.0, 0.25, 0.0, 0.5, 0.25, 0.0], dtype=torch.float64)
    # Midpoints of each token's interval of the CDF, and the extremes 0 and just below 1.
    u = torch.tensor([0.0, 0.125, 0.5, 0.875, 1.0 - 2.0**-53])
    got = sample_with_uniforms(probs.expand(len(u), -1), u)
    assert got.tolist() == [1, 1, 3, 4, 4]
    # Unnormalised rows are drawn as if normalised.
    assert sample_with_uniforms((4 * probs).expand(len(u), -1), u).tolist() == [1, 1, 3, 4, 4]


def test_u_rounding_up_to_the_total_never_picks_a_zero_mass_tail() -> None:
    probs = torch.tensor([[0.1, 0.7, 0.2, 0.0, 0.0]], dtype=torch.float32)
    assert sample_with_uniforms(probs, torch.tensor([1.0])).tolist() == [2]


def test_sample_is_reproducible_per_row_and_seed() -> None:
    probs = torch.softmax(torch.randn(3, 50, generator=torch.Generator().manual_seed(0)), dim=-1)
    first = sample(probs, [make_generator(s) for s in (1, 2, 3)])
    again = sample(probs, [make_generator(s) for s in (1, 2, 3)])
    assert first.dtype == torch.int64 and first.shape == (3,)
    assert torch.equal(first, again)
    # A row's draw depends only on its own generator, not on its neighbours.
    assert sample(probs[1:2], [make_generator(2)]).tolist() == first[1:2].tolist()


def test_unseeded_generators_differ() -> None:
    a = torch.rand(4, generator=make_generator(None))
    b = torch.rand(4, generator=make_generator(None))
    assert not torch.equal(a, b)


def test_sample_never_draws_filtered_tokens() -> None:
    logits = torch.randn(64, 10, generator=torch.Generator().manual_seed(5))
    probs = warp_probs(logits, SamplingParams(temperature=1.5, top_k=3))
    g = make_generator(7)
    for _ in range(20):
        drawn = sample(probs, [g] * 64)
        assert bool((probs.gather(1, drawn.unsqueeze(1)) > 0).all())
