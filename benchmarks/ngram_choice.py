"""Which earlier match should prompt lookup copy from? Simulated greedy decoding on real text.

Each Python standard-library source file is one request: its first `--prompt` tokens are
the prompt, and the rest is what the "target" generates. Every step asks the n-gram
proposer for `k` tokens, accepts the longest prefix that matches the true continuation,
and advances by accepted + 1 tokens, exactly like greedy speculative decoding with a
perfect target. Reported per choice and k:

- acc/prop: draft tokens accepted per proposal (steps that got a draft);
- MAL: tokens emitted per step (the mean accepted length, 1 + accepted per step);
- drafted%: share of steps that got a draft;
- us/step: wall time of `propose` per step, index catch-up included;
- score: mean `Draft.score` next to mean accepted, to check the score is honest.

    .venv/bin/python benchmarks/ngram_choice.py [--tokenizer word|byte] [--files 60]
"""

from __future__ import annotations

import argparse
import re
import sysconfig
import time
from collections import defaultdict
from pathlib import Path

from spec_sdk.proposers.base import RequestView
from spec_sdk.proposers.ngram import CHOICES, NgramProposer
from spec_sdk.types import SamplingParams, SpecStats

_WORD = re.compile(r"\w+|[^\w\s]|\s+")


def load_streams(tokenizer: str, files: int, max_tokens: int) -> list[list[int]]:
    """Token-id streams of the first `files` stdlib modules (sorted by name, 4-64 KB)."""
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    paths = [p for p in sorted(stdlib.glob("*.py")) if 4_000 <= p.stat().st_size <= 64_000][:files]
    vocab: dict[str, int] = {}
    streams = []
    for path in paths:
        data = path.read_bytes()
        if tokenizer == "byte":
            ids = list(data)
        else:
            ids = [vocab.setdefault(w, len(vocab)) for w in _WORD.findall(data.decode("utf-8", "replace"))]
        streams.append(ids[:max_tokens])
    return streams


def simulate(streams: list[list[int]], choice: str, k: int, prompt: int, max_n: int) -> dict[str, float]:
    proposer = NgramProposer(min_n=1, max_n=max_n, choice=choice)
    params = SamplingParams()
    steps = proposals = accepted = emitted = 0
    seconds = 0.0
    score_sum = 0.0
    by_score: dict[float, list[int]] = defaultdict(lambda: [0, 0])
    for rid, stream in enumerate(streams):
        tokens = stream[:prompt]
        req = RequestView(str(rid), tokens, prompt, params, SpecStats())
        proposer.start(req)
        while len(tokens) < len(stream):
            pos = len(tokens)
            t0 = time.perf_counter()
            draft = proposer.propose([req], [k])[0]
            seconds += time.perf_counter() - t0
            acc = 0
            if draft is not None:
                truth = stream[pos : pos + len(draft)]
                while acc < len(truth) and draft.tokens[acc] == truth[acc]:
                    acc += 1
                proposals += 1
                accepted += acc
                score_sum += draft.score
                bucket = by_score[round(draft.score, 2)]
                bucket[0] += 1
                bucket[1] += acc
            step = stream[pos : pos + acc + 1]
            tokens.extend(step)
            proposer.observe(req, step, None)
            steps += 1
            emitted += len(step)
        proposer.finish(req)
    return {
        "acc/prop": accepted / max(proposals, 1),
        "MAL": emitted / steps,
        "drafted%": 100.0 * proposals / steps,
        "us/step": 1e6 * seconds / steps,
        "score": score_sum / max(proposals, 1),
        "calibration": {s: (n, a / n) for s, (n, a) in sorted(by_score.items())},  # type: ignore[dict-item]
    }


def cost_by_context(streams: list[list[int]], choice: str, k: int, parts: int = 4) -> list[float]:
    """Every stream in one request, decoded one token per step from 64 tokens in: mean
    microseconds of `propose` in each `parts`-th of the context, to show the cost is flat."""
    stream = [t for s in streams for t in s]
    tokens = stream[:64]
    req = RequestView("long", tokens, 64, SamplingParams(), SpecStats())
    proposer = NgramProposer(choice=choice)
    proposer.start(req)
    sums = [0.0] * parts
    counts = [0] * parts
    for pos in range(64, len(stream)):
        t0 = time.perf_counter()
        proposer.propose([req], [k])
        part = pos * parts // len(stream)
        sums[part] += time.perf_counter() - t0
        counts[part] += 1
        tokens.append(stream[pos])
    return [1e6 * s / max(c, 1) for s, c in zip(sums, counts)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", choices=("word", "byte"), default="word")
    ap.add_argument("--files", type=int, default=60)
    ap.add_argument("--max-tokens", type=int, default=6000)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--max-n", type=int, default=4)
    ap.add_argument("--k", type=int, nargs="+", default=[4, 6, 8])
    ap.add_argument("--choices", nargs="+", default=list(CHOICES))
    ap.add_argument("--calibration", action="store_true", help="print accepted per proposal by score")
    args = ap.parse_args()

    streams = load_streams(args.tokenizer, args.files, args.max_tokens)
    total = sum(len(s) for s in streams)
    print(f"{len(streams)} stdlib files, {total} {args.tokenizer} tokens, min_n=1 max_n={args.max_n}")
    print(f"{'choice':>9} {'k':>2} {'acc/prop':>9} {'MAL':>6} {'drafted%':>9} {'us/step':>8} {'score':>6}")
    for k in args.k:
        for choice in args.choices:
            r = simulate(streams, choice, k, args.prompt, args.max_n)
            print(
                f"{choice:>9} {k:>2} {r['acc/prop']:>9.3f} {r['MAL']:>6.3f} {r['drafted%']:>9.1f}"
                f" {r['us/step']:>8.2f} {r['score']:>6.2f}"
            )
            if args.calibration:
                for score, (n, acc) in r["calibration"].items():  # type: ignore[attr-defined]
                    print(f"{'':>12} score {score:5.2f}: {n:7d} drafts, accepted {acc:.3f}")
    print(f"us/step by context quarter (one {total}-token request, k={args.k[-1]}):")
    for choice in args.choices:
        costs = cost_by_context(streams, choice, args.k[-1])
        print(f"{choice:>9}  " + "  ".join(f"{c:6.2f}" for c in costs))


if __name__ == "__main__":
    main()
