"""Hypothesis strategies for property tests of proposers, verifiers and engines."""

from __future__ import annotations

import torch
from hypothesis import strategies as st

from spec_sdk.types import Draft, SamplingParams

__all__ = ["drafts", "prompts", "sampling_params"]


def _as_strategy(value: int | st.SearchStrategy[int]) -> st.SearchStrategy[int]:
    return value if isinstance(value, st.SearchStrategy) else st.just(value)


@st.composite
def sampling_params(
    draw: st.DrawFn,
    greedy: bool | None = None,
    max_new_tokens: int | st.SearchStrategy[int] = st.integers(1, 32),
) -> SamplingParams:
    """Valid `SamplingParams`: greedy (temperature 0) if `greedy`, sampled if `greedy is
    False`, either if None. Each warper is often off and otherwise drawn over its range, so
    their combinations (and greedy with warpers set, which must not change greedy) come up."""
    if greedy is None:
        greedy = draw(st.booleans())
    temperature = 0.0 if greedy else draw(st.floats(0.05, 3.0))
    return SamplingParams(
        temperature=temperature,
        top_k=draw(st.one_of(st.just(0), st.integers(1, 10))),
        top_p=draw(st.one_of(st.just(1.0), st.floats(0.05, 1.0))),
        min_p=draw(st.one_of(st.just(0.0), st.floats(0.0, 0.9))),
        max_new_tokens=draw(_as_strategy(max_new_tokens)),
        seed=draw(st.one_of(st.none(), st.integers(0, 2**31 - 1))),
    )


@st.composite
def prompts(draw: st.DrawFn, vocab_size: int, min_len: int = 1, max_len: int = 32) -> list[int]:
    """Token-id lists of length [min_len, max_len]. Half are a short pattern repeated, with a
    few tokens changed, so n-gram and suffix proposers find matches; half are free."""
    if not 1 <= min_len <= max_len:
        raise ValueError(f"need 1 <= min_len <= max_len, got {min_len}, {max_len}")
    token = st.integers(0, vocab_size - 1)
    length = draw(st.integers(min_len, max_len))
    if not draw(st.booleans()):
        return draw(st.lists(token, min_size=length, max_size=length))
    pattern = draw(st.lists(token, min_size=1, max_size=min(6, length)))
    ids = (pattern * (length // len(pattern) + 1))[:length]
    for _ in range(draw(st.integers(0, max(0, length // 8)))):
        ids[draw(st.integers(0, length - 1))] = draw(token)
    return ids


@st.composite
def drafts(
    draw: st.DrawFn,
    vocab_size: int,
    max_len: int,
    min_len: int = 1,
    with_probs: bool | None = None,
    dtype: torch.dtype = torch.float64,
) -> Draft:
    """Chain drafts of [min_len, max_len] tokens. With probs (always if `with_probs`, never if
    False, either if None) each row is a distribution summing to 1 that gives the drafted
    token positive mass, as a real draw from it would."""
    tokens = draw(st.lists(st.integers(0, vocab_size - 1), min_size=min_len, max_size=max_len))
    if with_probs is None:
        with_probs = draw(st.booleans())
    if not with_probs or not tokens:
        return Draft(tokens=tokens, source="hypothesis")
    weight = st.one_of(st.just(0.0), st.floats(0.0, 1.0))
    rows = []
    for tok in tokens:
        row = torch.tensor(draw(st.lists(weight, min_size=vocab_size, max_size=vocab_size)), dtype=torch.float64)
        row[tok] += draw(st.floats(0.01, 1.0))
        rows.append(row / row.sum())
    return Draft(tokens=tokens, probs=torch.stack(rows).to(dtype), source="hypothesis")
