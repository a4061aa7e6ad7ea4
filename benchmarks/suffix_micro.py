"""Micro-benchmark of SuffixProposer: microseconds per update and per speculation, with 1k
and 100k requests in the global cache.

    .venv/bin/python benchmarks/suffix_micro.py                  # 1k and 100k cached requests
    .venv/bin/python benchmarks/suffix_micro.py --cached 1000 --corpus words
    .venv/bin/python benchmarks/suffix_micro.py --clock cpu      # on a machine shared with other work
    .venv/bin/python benchmarks/suffix_micro.py --core python    # the pure-Python trie (default: auto)

The cache is filled through the proposer's own API (start / observe / finish) with finished
requests of 64-256 output tokens after a 16-token prompt tail. Then `--requests` fresh
requests run against it, one at a time, each with a 256-token prompt: per step, `propose`
(budget `--budget`) then `observe` of `--step` new tokens (an accepted step). Reported:
median and p90 of each and of their sum per step; `start` (which evicts the oldest cached
request once the cache is full: steady state); the fill rate; memory; and how many drafted
tokens agree with the text that really followed (a sanity check that drafts are useful).

`--clock cpu` times with this thread's CPU time instead of the wall clock, less the cost of
reading that clock: time the process spent waiting for a core (other processes running) is
left out. A busy machine still slows the work itself (shared caches and cores): compare
versions in the same run, or interleaved, not against numbers taken at another time.

Corpora:
- "synthetic": a vocabulary of 1,000, text made of phrases (4-16 tokens) drawn from a bank
  of 3,000 with Zipf-like popularity, and 20% random tokens between them -- text that repeats
  within and across requests, like agent and chat traffic;
- "words": Python standard-library source split into words and punctuation, one id per
  distinct word -- real text with real repetition (all requests are cut from it).
"""

from __future__ import annotations

import argparse
import gc
import random
import re
import resource
import statistics
import sys
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path

from spec_sdk.proposers.base import RequestView
from spec_sdk.proposers.suffix import SuffixProposer
from spec_sdk.proposers.suffix_tree import CORES, resolve_core
from spec_sdk.types import SamplingParams, SpecStats

PARAMS = SamplingParams()


def synthetic(seed: int) -> Callable[[int], list[int]]:
    rng = random.Random(seed)
    vocab = 1000
    bank = [[rng.randrange(vocab) for _ in range(rng.randint(4, 16))] for _ in range(3000)]

    def gen(n: int) -> list[int]:
        out: list[int] = []
        while len(out) < n:
            if rng.random() < 0.2:
                out.append(rng.randrange(vocab))
            else:
                out.extend(bank[min(int(rng.expovariate(1 / 200)), len(bank) - 1)])
        return out[:n]

    return gen


def words(seed: int) -> Callable[[int], list[int]]:
    rng = random.Random(seed)
    ids: dict[str, int] = {}
    text: list[int] = []
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).glob("*.py")):
        for w in re.findall(r"\w+|[^\w\s]", path.read_text(errors="replace")):
            text.append(ids.setdefault(w, len(ids)))

    def gen(n: int) -> list[int]:
        start = rng.randrange(len(text) - n)
        return text[start : start + n]

    return gen


CORPORA = {"synthetic": synthetic, "words": words}


def view(rid: str, tokens: list[int], prompt_len: int) -> RequestView:
    return RequestView(rid, tokens, prompt_len, PARAMS, SpecStats())


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_clock() -> Callable[[], int]:
    """Thread CPU time in ns, less the cost of the reads so far, so that back-to-back reads
    differ by ~0 (a read can cost ~1 us, a system call, which would otherwise count as work)."""
    read = time.thread_time_ns
    cost = int(statistics.median(-read() + read() for _ in range(2001)))
    calls = 0

    def clock() -> int:
        nonlocal calls
        calls += 1
        return read() - calls * cost

    return clock


def run(cached: int, args: argparse.Namespace) -> dict[str, float]:
    gen = CORPORA[args.corpus](args.seed)
    proposer = SuffixProposer(max_cached_requests=cached, max_cached_nodes=10**9, max_depth=args.depth,
                              core=args.core)
    rng = random.Random(args.seed + 1)
    before = rss_mb()
    t0 = time.perf_counter()
    filled = 0
    for i in range(cached):
        out_len = rng.randint(64, 256)
        tokens = gen(16 + out_len)
        v = view(f"fill{i}", tokens[:16], 16)
        proposer.start(v)
        v.tokens._items.extend(tokens[16:])  # type: ignore[attr-defined]
        proposer.observe(v, tokens[16:], None)
        proposer.finish(v)
        filled += len(tokens)
    fill_s = time.perf_counter() - t0
    stats = proposer.stats()
    gc.collect()
    upd: list[float] = []
    spec: list[float] = []
    both: list[float] = []
    starts: list[float] = []
    drafted = agreed = 0
    clock = cpu_clock() if args.clock == "cpu" else time.perf_counter_ns
    for r in range(args.requests):
        tokens = gen(256 + args.step * args.steps)
        live = tokens[:256]
        v = view(f"m{r}", live, 256)
        a = clock()
        proposer.start(v)
        starts.append((clock() - a) / 1e3)
        for s in range(args.steps):
            pos = len(live)
            a = clock()
            draft = proposer.propose([v], [args.budget])[0]
            b = clock()
            new = tokens[pos : pos + args.step]
            live.extend(new)
            c = clock()
            proposer.observe(v, new, None)
            d = clock()
            spec.append((b - a) / 1e3)
            upd.append((d - c) / 1e3)
            both.append((b - a + d - c) / 1e3)
            if draft is not None:
                drafted += len(draft)
                truth = tokens[pos : pos + len(draft)]
                agreed += next((i for i, (x, y) in enumerate(zip(draft.tokens, truth)) if x != y), len(truth))
        proposer.finish(v)
    return {
        "cached": len(proposer.cache),
        "upd_med": statistics.median(upd), "upd_p90": pct(upd, 0.9),
        "spec_med": statistics.median(spec), "spec_p90": pct(spec, 0.9),
        "step_med": statistics.median(both), "step_p90": pct(both, 0.9),
        "start_med": statistics.median(starts), "start_p90": pct(starts, 0.9),
        "fill_us_per_token": fill_s / filled * 1e6,
        "entries_m": stats["global_entries"] / 1e6,
        "entries_per_token": stats["global_entries"] / stats["global_tokens"],
        "rss_mb": rss_mb() - before,
        "draft_len": drafted / (args.requests * args.steps),
        "agreed": agreed / (args.requests * args.steps),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cached", type=int, nargs="+", default=[1000, 100_000])
    parser.add_argument("--corpus", choices=sorted(CORPORA), default="synthetic")
    parser.add_argument("--requests", type=int, default=100, help="measured requests")
    parser.add_argument("--steps", type=int, default=50, help="measured steps per request")
    parser.add_argument("--step", type=int, default=3, help="tokens per observed step")
    parser.add_argument("--budget", type=int, default=8)
    parser.add_argument("--depth", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall: perf_counter; cpu: this thread's CPU time (for a shared machine)")
    parser.add_argument("--core", choices=list(CORES), default="auto",
                        help="the suffix trie: c (compiled), python, auto (c when built)")
    args = parser.parse_args(argv)
    print(f"core={resolve_core(args.core)} corpus={args.corpus} depth={args.depth} budget={args.budget} "
          f"step={args.step} tokens requests={args.requests}x{args.steps} steps clock={args.clock}  "
          f"(python {sys.version.split()[0]}; us = microseconds)")
    header = ("cached", "update med/p90", "propose med/p90", "step med/p90", "start+evict med/p90",
              "fill us/tok", "entries (M)", "per tok", "RSS MB", "draft len", "agreed")
    print(" | ".join(header))
    for cached in args.cached:
        r = run(cached, args)
        print(" | ".join([
            f"{r['cached']:>6}", f"{r['upd_med']:.1f} / {r['upd_p90']:.1f}", f"{r['spec_med']:.1f} / {r['spec_p90']:.1f}",
            f"{r['step_med']:.1f} / {r['step_p90']:.1f}", f"{r['start_med']:.0f} / {r['start_p90']:.0f}",
            f"{r['fill_us_per_token']:.1f}", f"{r['entries_m']:.2f}", f"{r['entries_per_token']:.2f}",
            f"{r['rss_mb']:.0f}", f"{r['draft_len']:.2f}", f"{r['agreed']:.2f}",
        ]), flush=True)


if __name__ == "__main__":
    main()
