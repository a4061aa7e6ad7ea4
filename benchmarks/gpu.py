"""GPU benchmark of the native backend: target step latency (eager vs CUDA graph, bf16 vs FP8),
speculator draft latency per token, and end-to-end speedup through the engine. Prints tables.

    python benchmarks/gpu.py                          # zoo target + a random 1B-class Llama
    python benchmarks/gpu.py --models zoo --batches 1,8,32 --drafts 0,4,8 --json out.json

A step is what the engine asks of the backend each iteration: `score` for B requests, each with
its last token and a chain draft of k tokens (k + 1 positions), then `commit`; timed from the
host call to the GPU finishing (the engine's one sync per step happens in verification). The
cache holds a prompt of `--context` tokens per request. FP8 runs `torch._scaled_mm` where the GPU
has FP8 tensor cores (compute capability >= 8.9) and the dequantising path elsewhere (slow: it
exists for correctness, not speed).

Models: `zoo` is the committed zoo target (12.6M parameters: launch-bound, where CUDA graphs
matter most); `llama1b` is a randomly initialised Llama with 1B-class shapes (hidden 2048, 16
layers, GQA 32/8, vocab 32000: matmul-bound, where FP8 matters). Random weights time the same as
trained ones; they are not used for quality (tests/test_native_fp8.py reports that on the zoo).
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

from spec_sdk.backends.base import ScoreItem
from spec_sdk.backends.native import NativeBackend
from spec_sdk.backends.native.fp8 import has_fp8_matmul
from spec_sdk.types import Draft, SamplingParams


def _model(name: str) -> Any:
    if name == "zoo":
        from spec_sdk.zoo.build import default_model_dir

        return default_model_dir()
    if name == "llama1b":
        from transformers import LlamaConfig, LlamaForCausalLM

        config = LlamaConfig(
            vocab_size=32000, hidden_size=2048, intermediate_size=5632, num_hidden_layers=16,
            num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=2048,
            tie_word_embeddings=False,
        )
        with torch.device("cuda"):
            torch.manual_seed(0)
            return LlamaForCausalLM(config).to(torch.bfloat16).eval()
    return Path(name)


def step_latency(backend: NativeBackend, batch: int, k: int, context: int, iters: int, warmup: int = 5) -> float:
    """Median milliseconds per step (score + commit, GPU finished) for `batch` requests with
    k-token chain drafts."""
    vocab = backend.vocab_size
    g = torch.Generator().manual_seed(0)
    rids = [f"r{i}" for i in range(batch)]
    for rid in rids:
        backend.add(rid, torch.randint(0, vocab, (context,), generator=g).tolist())
    draft = Draft(tokens=torch.randint(0, vocab, (k,), generator=g).tolist()) if k else None
    times = []
    try:
        for i in range(warmup + iters):
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            results = backend.score([ScoreItem(rid, 7, draft) for rid in rids])
            results[-1].logits.sum().item()  # waits for the forward, as verification will
            for rid in rids:
                backend.commit(rid, [])  # reject everything: the cache length stays at `context`
            if i >= warmup:
                times.append(time.perf_counter() - t0)
    finally:
        for rid in rids:
            backend.remove(rid)
    return 1000 * statistics.median(times)


def speculator_ms_per_token(backend: NativeBackend) -> str:
    """TODO hook: the MLP/LSTM speculator proposers are being written (spec_sdk.proposers); once one
    is registered, time its batched k-step draft here (ms per drafted token, eager and graph)."""
    from spec_sdk.proposers import registry

    names = [n for n in registry.available() if "speculator" in n or n in ("mlp", "lstm")]
    return f"TODO: speculator proposers available: {names or 'none yet'}"


async def _throughput(backend: NativeBackend, prompts: list[list[int]], proposers: list[str], k: int,
                      max_new: int) -> tuple[float, float]:
    from spec_sdk.engine import SpecEngine

    params = SamplingParams(max_new_tokens=max_new, ignore_eos=True)
    async with SpecEngine(backend, proposers=proposers, num_speculative_tokens=k, max_batch=len(prompts),
                          admission="wait") as engine:
        await engine.generate(prompts[0], SamplingParams(max_new_tokens=8))
        tokens = 0
        start = time.perf_counter()
        async with anyio.create_task_group() as tg:
            async def one(p: list[int]) -> None:
                nonlocal tokens
                tokens += len((await engine.generate(p, params)).token_ids)

            for p in prompts:
                tg.start_soon(one, p)
        seconds = time.perf_counter() - start
        mal = engine.metrics().totals.mean_accepted_length
    return tokens / seconds, mal


def _prompts(backend: NativeBackend, n: int) -> list[list[int]]:
    # repetitive text so that prompt lookup has something to find (as in benchmarks/prompts)
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(n):
        phrase = torch.randint(3, backend.vocab_size, (12,), generator=g).tolist()
        out.append((phrase * 8)[:96])
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="zoo,llama1b")
    parser.add_argument("--batches", default="1,8,32")
    parser.add_argument("--drafts", default="0,4,8")
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--iters", type=int, default=30)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("benchmarks/gpu.py needs a CUDA GPU", file=sys.stderr)
        return 2
    device = torch.device("cuda")
    batches = [int(b) for b in args.batches.split(",")]
    drafts = [int(k) for k in args.drafts.split(",")]
    print(f"GPU: {torch.cuda.get_device_name()}, FP8 tensor cores: {has_fp8_matmul(device)}, torch {torch.__version__}")
    report: dict[str, Any] = {"gpu": torch.cuda.get_device_name(), "latency": [], "end_to_end": []}
    for name in args.models.split(","):
        model = _model(name)
        slots = max(batches)
        variants = {
            (dtype_name, fp8, graphs): NativeBackend(model, max_slots=slots, max_len=args.context + 64 + args.max_new_tokens,
                                                     device=device, dtype=torch.bfloat16, fp8=fp8, cuda_graphs=graphs)
            for dtype_name, fp8 in (("bf16", False), ("fp8", True))
            for graphs in (False, True)
        }
        print(f"\n== {name}: step latency, ms (context {args.context}, median of {args.iters})")
        print(f"{'B':>4}{'k':>4}{'bf16 eager':>12}{'bf16 graph':>12}{'fp8 eager':>12}{'fp8 graph':>12}{'graph x':>9}{'fp8 x':>8}")
        for b in batches:
            for k in drafts:
                ms = {key: step_latency(be, b, k, args.context, args.iters) for key, be in variants.items()}
                be_, bg, fe, fg = ms[("bf16", False, False)], ms[("bf16", False, True)], ms[("fp8", True, False)], ms[("fp8", True, True)]
                print(f"{b:>4}{k:>4}{be_:>12.3f}{bg:>12.3f}{fe:>12.3f}{fg:>12.3f}{be_ / bg:>8.2f}x{bg / fg:>7.2f}x")
                report["latency"].append({"model": name, "batch": b, "k": k, "bf16_eager": be_, "bf16_graph": bg,
                                          "fp8_eager": fe, "fp8_graph": fg})
        print(f"speculator ms/token: {speculator_ms_per_token(variants[('bf16', False, True)])}")
        print(f"\n== {name}: end to end, ngram k=4 vs target-only, {args.max_new_tokens} new tokens per request")
        print(f"{'backend':<14}{'B':>4}{'target tok/s':>14}{'spec tok/s':>12}{'MAL':>6}{'speedup':>9}")
        for label, key in (("bf16 eager", ("bf16", False, False)), ("bf16 graph", ("bf16", False, True)),
                           ("fp8 graph", ("fp8", True, True))):
            for b in (1, max(batches)):
                prompts = _prompts(variants[key], b)
                base, _ = anyio.run(_throughput, variants[key], prompts, [], 4, args.max_new_tokens)
                spec, mal = anyio.run(_throughput, variants[key], prompts, ["ngram"], 4, args.max_new_tokens)
                print(f"{label:<14}{b:>4}{base:>14.1f}{spec:>12.1f}{mal:>6.2f}{spec / base:>8.2f}x")
                report["end_to_end"].append({"model": name, "backend": label, "batch": b, "target_tps": base,
                                             "spec_tps": spec, "mal": mal})
        del variants
        torch.cuda.empty_cache()
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
