"""Native backend forward time for batches whose rows differ in draft length: one padded pass
against the two-pass split, at each first-pass width, side by side in one process.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/attention_split.py
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/attention_split.py --batch 16 --context 300

Each mix is a list of row sizes (nodes: root + draft). For each, the forward runs with attention
in one pass padded to the longest row and with every two-pass plan (`head` = a row size below
the longest); the chosen plan (what `make_batch` picks) is marked. This is what calibrates
the cost model in `batch.split_head`: the split should be picked where it is faster, and only there.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import attrs
import torch

from spec_sdk.backends.native import NativeBackend
from spec_sdk.backends.native.batch import Batch, Row, make_batch, split_plan
from spec_sdk.backends.native.model import forward
from spec_sdk.types import Draft
from spec_sdk.zoo.build import default_model_dir


def _mixes(b: int) -> dict[str, list[int]]:
    return {
        "all k=4": [5] * b,
        "one k=8, rest k=4": [9] + [5] * (b - 1),
        "quarter k=8, rest k=4": [9] * (b // 4) + [5] * (b - b // 4),
        "half k=8, rest k=4": [9] * (b // 2) + [5] * (b - b // 2),
        "half k=0, half k=4": [1] * (b // 2) + [5] * (b - b // 2),
        "three quarters k=0, rest k=4": [1] * (3 * b // 4) + [5] * (b - 3 * b // 4),
        "one k=8, rest k=0": [9] + [1] * (b - 1),
        "k=1..8 mixed": [1 + (i % 9) for i in range(b)],
    }


def _times(runs: list[Callable[[], object]], repeats: int) -> list[float]:
    """Median ms of each run, interleaved so that a slow spell of a shared machine hits all."""
    for run in runs:
        run()
    times: list[list[float]] = [[] for _ in runs]
    for _ in range(repeats):
        for run, out in zip(runs, times):
            start = time.perf_counter()
            run()
            out.append(time.perf_counter() - start)
    return [statistics.median(t) * 1000 for t in times]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--context", type=int, default=150)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    backend = NativeBackend(default_model_dir(role="target"), max_slots=args.batch)
    for i in range(args.batch):
        backend.add(f"r{i}", [1 + (i + j) % 200 for j in range(args.context)])
    slots = sorted(s.index for s in backend._slots.values())

    def run(batch: Batch) -> None:
        with torch.inference_mode():
            forward(backend.spec, backend.weights, backend.rope, backend.kv, batch, backend.linear)

    for name, sizes in _mixes(args.batch).items():
        rows = [Row(slot, args.context - 1, 7, Draft(tokens=[3] * (n - 1)) if n > 1 else None)
                for slot, n in zip(slots, sizes)]
        planned = make_batch(rows, backend.kv.scratch, backend.device)
        chosen = 0 if planned.split is None else planned.split.head
        t = max(sizes)
        heads = [0] + (sorted(set(sizes) - {t}) if planned.real is not None else [])
        plans = [attrs.evolve(planned, split=split_plan(sizes, t, h, backend.device) if h else None) for h in heads]
        ms = _times([lambda p=p: run(p) for p in plans], args.repeats)
        print(f"{name:30s} " + "  ".join(
            f"{'padded' if h == 0 else f'head {h}'} {m:6.1f} ms{' *' if h == chosen else '  '}" for h, m in zip(heads, ms)),
            flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
