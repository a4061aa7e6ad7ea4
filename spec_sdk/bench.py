"""Side-by-side measurement: target-only vs speculative methods, same process, same prompts.

Every method runs on the same backend object and the same prompts, one request at a time
(latency view). Reported: tokens/s, speedup over target-only, mean accepted length (tokens
per target forward), acceptance by draft position, the split of step time between propose /
score / verify / bookkeeping, and whether each output equals target-only's.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import anyio
import attrs
from tqdm import tqdm

from spec_sdk.backends.base import TargetModel
from spec_sdk.engine import SpecEngine
from spec_sdk.types import SamplingParams, SpecStats


@attrs.frozen
class Method:
    """A named way to decode: proposers (name -> options) and the draft length `k`."""

    name: str
    proposers: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    k: int = 0


@attrs.define
class MethodResult:
    name: str
    tokens: int
    seconds: float
    stats: SpecStats
    outputs: list[list[int]]
    equal_to_baseline: int = 0

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0


def load_prompts(path: str | Path) -> list[str | list[int]]:
    """A JSONL file of {"prompt": text} / {"prompt_ids": [...]}, or plain text, one prompt per line."""
    prompts: list[str | list[int]] = []
    for line in Path(path).read_text().splitlines():
        if not line.strip():
            continue
        if line.lstrip().startswith("{"):
            rec = json.loads(line)
            prompts.append(rec["prompt_ids"] if "prompt_ids" in rec else rec["prompt"])
        else:
            prompts.append(line.replace("\\n", "\n"))
    return prompts


async def _run_method(
    backend: TargetModel,
    tokenizer: Any,
    method: Method,
    prompts: Sequence[str | Sequence[int]],
    params: SamplingParams,
    progress: bool,
) -> MethodResult:
    def engine() -> SpecEngine:
        return SpecEngine(backend, tokenizer=tokenizer, proposers=dict(method.proposers), num_speculative_tokens=method.k)

    async with engine() as warm:  # a separate engine, so its stats stay out of the measurement
        await warm.generate(prompts[0], attrs.evolve(params, max_new_tokens=4))
    async with engine() as measured:
        outputs: list[list[int]] = []
        start = time.perf_counter()
        for prompt in tqdm(prompts, desc=method.name, disable=not progress, leave=False):
            done = await measured.generate(prompt, params)
            outputs.append(list(done.token_ids))
        seconds = time.perf_counter() - start
        stats = measured.metrics().totals
    return MethodResult(method.name, sum(map(len, outputs)), seconds, stats, outputs)


def run_bench(
    backend: TargetModel,
    tokenizer: Any,
    prompts: Sequence[str | Sequence[int]],
    methods: Sequence[Method],
    params: SamplingParams,
    progress: bool = True,
) -> dict[str, Any]:
    """Run target-only then every method; returns a JSON-ready report."""
    baseline = Method("target-only")
    results = [anyio.run(_run_method, backend, tokenizer, m, prompts, params, progress) for m in (baseline, *methods)]
    base = results[0]
    report: dict[str, Any] = {"params": attrs.asdict(params), "prompts": len(prompts), "methods": {}}
    for res in results:
        res.equal_to_baseline = sum(a == b for a, b in zip(res.outputs, base.outputs))
        report["methods"][res.name] = {
            "tokens": res.tokens,
            "seconds": res.seconds,
            "tokens_per_second": res.tokens_per_second,
            "speedup": res.tokens_per_second / base.tokens_per_second if base.tokens_per_second else 0.0,
            "mean_accepted_length": res.stats.mean_accepted_length,
            "acceptance_rate": res.stats.acceptance_rate,
            "acceptance_by_position": res.stats.acceptance_by_position(),
            "time_split": res.stats.times.shares(),
            "outputs_equal": f"{res.equal_to_baseline}/{len(prompts)}",
            "all_outputs_equal": res.equal_to_baseline == len(prompts),
            "proposer_errors": res.stats.proposer_errors,
        }
    return report


def format_report(report: Mapping[str, Any]) -> str:
    head = f"{'method':<22}{'tok/s':>9}{'speedup':>9}{'MAL':>7}{'accept':>8}   propose/score/verify/book   equal"
    lines = [head, "-" * len(head)]
    for name, m in report["methods"].items():
        split = "/".join(f"{100 * m['time_split'][k]:.0f}%" for k in ("propose", "score", "verify", "bookkeeping"))
        lines.append(
            f"{name:<22}{m['tokens_per_second']:>9.1f}{m['speedup']:>8.2f}x{m['mean_accepted_length']:>7.2f}"
            f"{m['acceptance_rate']:>8.2f}   {split:<26}  {m['outputs_equal']}"
        )
    return "\n".join(lines)
