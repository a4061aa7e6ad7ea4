"""`check_lossless`: the one call a proposer author makes to prove their proposer lossless.

Two checks, both through the real engine with real concurrency:
1. greedy: hypothesis draws batches of prompts; each batch runs concurrently with the
   proposer on a float64 random-weight Llama, and every output must equal plain target-only
   greedy decoding (computed without the engine) under the tie-aware rule;
2. sampling: thousands of seeded requests on a table-driven target with a tiny vocabulary;
   the histogram of whole output sequences must match the exactly enumerated target
   distribution (chi-square).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import attrs
import torch

from spec_sdk.backends.base import TargetModel
from spec_sdk.backends.hf import HFBackend
from spec_sdk.engine import SpecEngine
from spec_sdk.policy import Policy
from spec_sdk.proposers.base import Proposer
from spec_sdk.testing.targets import (
    TableTarget,
    exact_sequence_distribution,
    reference_greedy,
    tie_aware_equal,
    tiny_llama,
)
from spec_sdk.types import Completion, SamplingParams

ProposerFactory = Callable[[TargetModel], Proposer]


@attrs.define
class LosslessReport:
    greedy_cases: int = 0
    greedy_requests: int = 0
    drafted: int = 0
    accepted: int = 0
    proposer_errors: int = 0
    samples: int = 0
    chi2: float = 0.0
    dof: int = 0
    p_value: float = 1.0


async def run_concurrently(
    backend: TargetModel,
    proposers: Sequence[Proposer],
    prompts: Sequence[Sequence[int]],
    params: Sequence[SamplingParams],
    k: int = 4,
    policy: Policy | None = None,
    max_batch: int = 64,
) -> tuple[list[Completion], Any]:
    """Run every prompt as its own concurrent request; returns completions and engine metrics."""
    results: list[Completion | None] = [None] * len(prompts)
    async with SpecEngine(
        backend, proposers=list(proposers), policy=policy, num_speculative_tokens=k,
        max_batch=max_batch, admission="wait",
    ) as engine:

        async def one(i: int) -> None:
            results[i] = await engine.generate(list(prompts[i]), params[i])

        async with anyio.create_task_group() as tg:
            for i in range(len(prompts)):
                tg.start_soon(one, i)
        metrics = engine.metrics()
    return [r for r in results if r is not None], metrics


def chi_square(observed: Counter[tuple[int, ...]], expected: dict[tuple[int, ...], float], n: int) -> tuple[float, int, float]:
    """Pearson's statistic with bins of expected count < 5 pooled; returns (chi2, dof, p)."""
    stray = sum(c for key, c in observed.items() if expected.get(key, 0.0) == 0.0)
    if stray:
        return math.inf, 0, 0.0  # an impossible sequence was produced
    bins: list[tuple[float, int]] = []
    pool_e, pool_o = 0.0, 0
    for key, p in sorted(expected.items(), key=lambda kv: -kv[1]):
        e = p * n
        if e >= 5:
            bins.append((e, observed.get(key, 0)))
        else:
            pool_e += e
            pool_o += observed.get(key, 0)
    if pool_e > 0:
        bins.append((pool_e, pool_o))
    stat = sum((o - e) ** 2 / e for e, o in bins)
    dof = max(len(bins) - 1, 1)
    p = float(torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64), torch.tensor(stat / 2, dtype=torch.float64)))
    return stat, dof, p


def check_lossless(
    make_proposer: ProposerFactory,
    *,
    k: int = 4,
    greedy_examples: int = 20,
    max_new_tokens: int = 16,
    sampling_samples: int = 3000,
    sampling_params: SamplingParams | None = None,
    require_drafts: bool = True,
    alpha: float = 1e-4,
    seed: int = 0,
    make_backend: Callable[[Any], TargetModel] | None = None,
) -> LosslessReport:
    """Raise `AssertionError` unless the proposer built by `make_proposer(target)` keeps the
    engine lossless; returns what was checked. `make_proposer` is called once per engine with
    the target it will speculate against (read `target.vocab_size` from it). `make_backend` wraps
    the greedy check's float64 Llama (default `HFBackend`; e.g. `NativeBackend`)."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from spec_sdk.testing.strategies import prompts as prompt_strategy

    report = LosslessReport()
    model = tiny_llama(seed=seed)
    backend = (make_backend or HFBackend)(model)
    vocab = backend.vocab_size

    @settings(max_examples=greedy_examples, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(batch=st.lists(prompt_strategy(vocab, max_len=24), min_size=1, max_size=6),
           n_new=st.integers(1, max_new_tokens))
    def greedy_case(batch: list[list[int]], n_new: int) -> None:
        params = [SamplingParams(max_new_tokens=n_new)] * len(batch)
        done, metrics = anyio.run(run_concurrently, backend, [make_proposer(backend)], batch, params, k)
        report.greedy_cases += 1
        report.greedy_requests += len(batch)
        report.drafted += metrics.totals.drafted
        report.accepted += metrics.totals.accepted
        report.proposer_errors += metrics.totals.proposer_errors
        for prompt, completion in zip(batch, done, strict=True):
            ref, margins = reference_greedy(model, prompt, n_new)
            assert tie_aware_equal(list(completion.token_ids), ref, margins), (
                f"greedy output differs from target-only for prompt {prompt}: "
                f"got {list(completion.token_ids)}, expected {ref}"
            )

    greedy_case()
    if require_drafts and report.drafted == 0:
        raise AssertionError("the proposer never drafted a token: the greedy check proved nothing")

    if sampling_samples:
        table = TableTarget(vocab_size=5, order=2, seed=seed)
        params = sampling_params or SamplingParams(temperature=0.9, top_p=0.95, max_new_tokens=3)
        prompt = [1, 2, 3]
        exact = exact_sequence_distribution(table, prompt, params.max_new_tokens, params)
        all_params = [attrs.evolve(params, seed=seed * 1_000_003 + i) for i in range(sampling_samples)]
        done, metrics = anyio.run(
            run_concurrently, table, [make_proposer(table)], [prompt] * sampling_samples, all_params, k
        )
        counts = Counter(tuple(c.token_ids) for c in done)
        report.samples = len(done)
        report.chi2, report.dof, report.p_value = chi_square(counts, exact, len(done))
        report.drafted += metrics.totals.drafted
        report.accepted += metrics.totals.accepted
        assert report.p_value > alpha, (
            f"sampled outputs do not follow the target distribution: chi2={report.chi2:.1f}, "
            f"dof={report.dof}, p={report.p_value:.2e}"
        )
    return report
