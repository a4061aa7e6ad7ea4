"""CPU throughput of the native backend against the hf backend, side by side in one process.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/native_cpu.py                 # zoo full target
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/native_cpu.py --rounds 5 --max-new-tokens 64

Target-only greedy decoding (no proposer: the number every speedup is measured against) through
`SpecEngine`, on the same prompts (benchmarks/prompts/repetitive.jsonl, 16 prompts). Each round:
- concurrent: all prompts at once (16 requests in one engine) on the native backend;
- batch 1: every prompt alone, on hf and on native in turn, alternating which goes first, so
  that load from other processes on a shared machine hits both alike.
Reported per round and as medians over rounds: tokens/s by wall clock and by this process's CPU
time (steadier when other processes compete for the cores), native over hf at batch 1, and
native concurrent over native batch 1 (aggregate throughput).
Also checks that native output equals hf output (tie-aware: a divergence only at a near-tie).
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

from spec_sdk.backends.hf import HFBackend
from spec_sdk.backends.native import NativeBackend
from spec_sdk.bench import load_prompts, tie_aware_same
from spec_sdk.engine import SpecEngine
from spec_sdk.types import SamplingParams


def _clocks() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


async def _measure(hf: Any, native: Any, concurrent: Any, prompts: list[list[int]], params: SamplingParams,
                   rounds: int, say: Any) -> tuple[list[dict[str, float]], list[list[int]], list[list[int]]]:
    """Per round: all prompts at once on `concurrent`, then every prompt alone on hf and on native,
    alternating which goes first, so drifting load from other processes hits both alike."""
    rows = []
    hf_out: list[list[int]] = []
    nat_out: list[list[int]] = []
    async with (
        SpecEngine(hf, proposers=[], max_batch=1) as e_hf,
        SpecEngine(native, proposers=[], max_batch=1) as e_nat,
        SpecEngine(concurrent, proposers=[], max_batch=len(prompts), admission="wait") as e_con,
    ):
        for engine in (e_hf, e_nat, e_con):
            await engine.generate(prompts[0], SamplingParams(max_new_tokens=4))  # warm-up
        for r in range(rounds):
            acc = {k: 0.0 for k in ("hf_wall", "hf_cpu", "nat_wall", "nat_cpu", "con_wall", "con_cpu")}
            tokens = {"hf": 0, "nat": 0, "con": 0}
            con_out: list[int] = []

            async def one(p: list[int]) -> None:
                con_out.append(len((await e_con.generate(p, params)).token_ids))

            w0, c0 = _clocks()
            async with anyio.create_task_group() as tg:
                for p in prompts:
                    tg.start_soon(one, p)
            w1, c1 = _clocks()
            acc["con_wall"], acc["con_cpu"], tokens["con"] = w1 - w0, c1 - c0, sum(con_out)
            hf_out, nat_out = [], []
            for i, p in enumerate(prompts):
                order = [("hf", e_hf, hf_out), ("nat", e_nat, nat_out)]
                for name, engine, outs in order if i % 2 == 0 else order[::-1]:
                    w0, c0 = _clocks()
                    done = await engine.generate(p, params)
                    w1, c1 = _clocks()
                    acc[f"{name}_wall"] += w1 - w0
                    acc[f"{name}_cpu"] += c1 - c0
                    tokens[name] += len(done.token_ids)
                    outs.append(list(done.token_ids))
            row = {}
            for clock in ("wall", "cpu"):
                hf_tps = tokens["hf"] / acc[f"hf_{clock}"]
                nat_tps = tokens["nat"] / acc[f"nat_{clock}"]
                con_tps = tokens["con"] / acc[f"con_{clock}"]
                row |= {f"hf_b1_tps_{clock}": hf_tps, f"native_b1_tps_{clock}": nat_tps,
                        f"native_concurrent_tps_{clock}": con_tps, f"native_vs_hf_{clock}": nat_tps / hf_tps,
                        f"concurrent_vs_b1_{clock}": con_tps / nat_tps}
            rows.append(row)
            say(f"round {r}: " + "  ".join(f"{k}={v:.2f}" for k, v in row.items()))
    return rows, hf_out, nat_out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="model directory (default: the zoo target)")
    parser.add_argument("--prompts", default=str(Path(__file__).parent / "prompts" / "repetitive.jsonl"))
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from spec_sdk.zoo.build import default_model_dir

    model_dir = Path(args.model) if args.model else default_model_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    texts = load_prompts(args.prompts)
    prompts = [list(t) if not isinstance(t, str) else tokenizer.encode(t) for t in texts]
    while len(prompts) < args.concurrency:
        prompts = prompts + prompts
    prompts = prompts[: args.concurrency]
    params = SamplingParams(max_new_tokens=args.max_new_tokens, ignore_eos=True)

    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    hf = HFBackend(model)
    native = NativeBackend(model_dir, max_slots=args.concurrency)

    say = lambda msg: print(msg, file=sys.stderr, flush=True)  # noqa: E731
    concurrent = NativeBackend(model_dir, max_slots=args.concurrency)
    rows, hf_out, nat_out = anyio.run(_measure, hf, native, concurrent, prompts, params, args.rounds, say)
    same = sum(tie_aware_same(model, p, a, b) for p, a, b in zip(prompts, nat_out, hf_out))
    median = {k: statistics.median(row[k] for row in rows) for k in rows[0]}
    print(f"model {model_dir}, {len(prompts)} prompts x {args.max_new_tokens} new tokens, target-only greedy, "
          f"torch threads {torch.get_num_threads()}, {args.rounds} rounds (medians of per-round figures)")
    print(f"{'':<26}{'tok/s (wall)':>14}{'tok/s (cpu)':>14}   ratios wall / cpu")
    print(f"{'hf batch 1':<26}{median['hf_b1_tps_wall']:>14.1f}{median['hf_b1_tps_cpu']:>14.1f}")
    print(f"{'native batch 1':<26}{median['native_b1_tps_wall']:>14.1f}{median['native_b1_tps_cpu']:>14.1f}   "
          f"{median['native_vs_hf_wall']:.2f}x / {median['native_vs_hf_cpu']:.2f}x hf")
    label = f"native {args.concurrency} concurrent"
    print(f"{label:<26}{median['native_concurrent_tps_wall']:>14.1f}{median['native_concurrent_tps_cpu']:>14.1f}   "
          f"{median['concurrent_vs_b1_wall']:.2f}x / {median['concurrent_vs_b1_cpu']:.2f}x native batch 1")
    print(f"native outputs equal to hf (tie-aware): {same}/{len(prompts)}")
    print(f"native memory: {native.memory()}")
    if args.json:
        Path(args.json).write_text(json.dumps({"rounds": rows, "median": median, "equal": same}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
