"""Adaptive speculation under load: aggregate throughput at 1, 4, 16 and 64 concurrent requests.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/concurrency.py                    # native backend
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/concurrency.py --levels 1,4 --requests 8 --backend hf

At each level `c`, `max(--waves * c, --requests)` prompts of a workload run through one engine
that admits `c` at a time (max_batch = c) -- several waves, so that a policy that learns is
measured mostly learned, as an engine that serves for hours is -- three ways, side by side in
one process and interleaved per level, `--repeats` times (the median run counts: on a shared
machine one run's throughput moves by several percent):
- no speculation (the baseline every ratio is against);
- the adaptive policy over every proposer the bench can build (it is not told the workload);
- one fixed proposer at k=4 (default suffix), to show what a fixed choice does under load.
Printed: a table of tokens/s and ratios; written: JSON (--json) and a plot (--plot).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import anyio
import torch

from spec_sdk import SamplingParams, SpecEngine
from spec_sdk.adaptive import AdaptivePolicy
from spec_sdk.zoo.build import default_model_dir


def _backend(kind: str, path: Path, slots: int) -> Any:
    if kind == "native":
        from spec_sdk.backends.native import NativeBackend

        return NativeBackend(path, max_slots=slots)
    from spec_sdk.backends.hf import HFBackend

    return HFBackend(path)


async def _run(backend: Any, tokenizer: Any, proposers: dict[str, dict[str, Any]], policy: Any, k: int,
               prompts: list[list[int]], params: SamplingParams, concurrency: int) -> tuple[float, int, dict[str, Any]]:
    async with SpecEngine(backend, tokenizer=tokenizer, proposers=proposers, policy=policy,
                          num_speculative_tokens=k, max_batch=concurrency, admission="wait") as engine:
        await engine.generate(prompts[0], max_new_tokens=4)  # warm-up, outside the clock
        tokens = 0
        start = time.perf_counter()

        async def one(p: list[int]) -> None:
            nonlocal tokens
            done = await engine.generate(p, params)
            tokens += len(done.token_ids)

        async with anyio.create_task_group() as tg:
            for p in prompts:
                tg.start_soon(one, p)
        seconds = time.perf_counter() - start
        m = engine.metrics()
        return seconds, tokens, {"mal": m.totals.mean_accepted_length, "policy": m.policy}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backend", choices=("native", "hf"), default="native")
    ap.add_argument("--levels", default="1,4,16,64")
    ap.add_argument("--requests", type=int, default=16, help="prompts per level, at least")
    ap.add_argument("--repeats", type=int, default=3, help="runs per method and level, interleaved; the median counts")
    ap.add_argument("--waves", type=int, default=2, help="prompts per level: at least this many times the level")
    ap.add_argument("--workload", default="chat")
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--fixed", default="suffix", help="the fixed proposer shown beside adaptive")
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--plot", type=Path, default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from spec_sdk.bench import sdk_methods
    from spec_sdk.proposers import registry
    from spec_sdk.workloads import load_workload

    target_dir = default_model_dir(role="target")
    tokenizer = AutoTokenizer.from_pretrained(str(target_dir))
    draft = AutoModelForCausalLM.from_pretrained(str(default_model_dir(role="draft")), dtype=torch.float32).eval()
    levels = [int(x) for x in args.levels.split(",")]
    backend = _backend(args.backend, target_dir, max(levels))
    methods, skipped = sdk_methods(registry.available(), 4, draft, speculator=str(target_dir))
    singles = {name: opts for m in methods if len(m.proposers) == 1 for name, opts in m.proposers.items()}
    # distinct prompts for every request: a repeated greedy prompt would hand the suffix cache
    # its own earlier answer
    most = max(max(args.waves * c for c in levels), args.requests)
    prompts_all = load_workload(args.workload, tokenizer, most, max_new_tokens=args.max_new_tokens)
    params = SamplingParams(max_new_tokens=args.max_new_tokens)
    print(f"[concurrency] backend={args.backend} workload={args.workload} proposers={sorted(singles)} skipped={skipped}",
          file=sys.stderr)
    rows = []
    for c in levels:
        count = max(args.waves * c, args.requests)
        prompts = (prompts_all * -(-count // len(prompts_all)))[:count]
        runs = {
            "none": ({}, lambda: None, 0),
            "adaptive": (singles, lambda: AdaptivePolicy(proposers=list(singles)), 8),  # fresh each run
            f"{args.fixed} k=4": ({args.fixed: singles.get(args.fixed, {})}, lambda: None, 4),
        }
        row: dict[str, Any] = {"concurrency": c, "requests": len(prompts)}
        rates: dict[str, list[float]] = {name: [] for name in runs}
        for rep in range(args.repeats):  # interleaved, so a slow spell of the machine hits every method
            for name, (proposers, policy, k) in runs.items():
                seconds, tokens, extra = anyio.run(_run, backend, tokenizer, proposers, policy(), k, prompts, params, c)
                rates[name].append(tokens / seconds)
                chosen = ""
                if extra.get("policy"):
                    shares = ", ".join(f"{n} {v:.0%}" for n, v in sorted(extra["policy"]["chosen"].items()))
                    spec = extra["policy"]["speculating_request_steps"]
                    chosen = f"  speculating request-steps {spec}, mean k {extra['policy']['mean_k']:.1f} ({shares})"
                print(f"  c={c:3d} {name:12s} {tokens / seconds:8.1f} tok/s  MAL {extra['mal']:.2f}{chosen}", file=sys.stderr)
                if rep == args.repeats - 1:
                    row[name] = {"tokens": tokens, "seconds": seconds, **extra}
        for name in runs:
            row[name]["runs_tokens_per_second"] = rates[name]
            row[name]["tokens_per_second"] = statistics.median(rates[name])
        base = row["none"]["tokens_per_second"]
        for name in runs:
            row[name]["vs_none"] = row[name]["tokens_per_second"] / base
        rows.append(row)
    print(f"{'concurrency':>11} {'none tok/s':>11} {'adaptive':>10} {'fixed':>10}")
    for row in rows:
        fixed = next(k for k in row if k.endswith("k=4"))
        print(f"{row['concurrency']:>11} {row['none']['tokens_per_second']:>11.1f} "
              f"{row['adaptive']['vs_none']:>9.2f}x {row[fixed]['vs_none']:>9.2f}x")
    report = {"backend": args.backend, "workload": args.workload, "max_new_tokens": args.max_new_tokens, "rows": rows}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1, default=str))
    if args.plot:
        _plot(report, args.plot)
    return 0


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    xs = [r["concurrency"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for name in [k for k in rows[0] if isinstance(rows[0][k], dict)]:
        left.plot(xs, [r[name]["tokens_per_second"] for r in rows], marker="o", label=name)
        right.plot(xs, [r[name]["vs_none"] for r in rows], marker="o", label=name)
    for ax in (left, right):
        ax.set_xscale("log", base=2)
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.set_xlabel("concurrent requests")
        ax.legend()
    left.set_ylabel("aggregate tokens/s")
    right.set_ylabel("throughput vs no speculation")
    right.axhline(1.0, color="grey", lw=0.8)
    fig.suptitle(f"{report['workload']}, {report['backend']} backend, {report['max_new_tokens']} new tokens")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    raise SystemExit(main())
