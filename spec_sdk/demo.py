"""`make demo`: stream a speculative generation live, then compare it with target-only decoding."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import anyio

from spec_sdk.backends.hf import HFBackend
from spec_sdk.engine import SpecEngine
from spec_sdk.types import SamplingParams

DEFAULT_PROMPT = (
    "def fibonacci(n):\n"
    '    """Return the n-th Fibonacci number."""\n'
    "    if n < 2:\n"
    "        return n\n"
    "    return fibonacci(n - 1) + fibonacci(n - 2)\n\n\n"
    "def factorial(n):\n"
)


def run_demo(model: str | Path, prompt: str | None, max_new_tokens: int) -> None:
    from transformers import AutoTokenizer

    prompt = prompt or DEFAULT_PROMPT
    backend = HFBackend(model)
    tokenizer = AutoTokenizer.from_pretrained(str(model))
    params = SamplingParams(max_new_tokens=max_new_tokens)
    tty = sys.stdout.isatty()

    async def speculative() -> tuple[list[int], float]:
        async with SpecEngine(backend, tokenizer=tokenizer) as warm:  # its stats stay out of the figures
            await warm.generate(prompt, max_new_tokens=2)
        async with SpecEngine(backend, tokenizer=tokenizer, proposers=["suffix"], num_speculative_tokens=6) as eng:
            print(f"--- streaming (suffix-tree proposer, k=6) ---\n{prompt}", end="")
            start = time.perf_counter()
            tokens: list[int] = []
            async with eng.stream(prompt, params) as stream:
                async for chunk in stream:
                    tokens.extend(chunk.token_ids)
                    # accepted draft tokens arrive several at a time: mark those steps
                    text = chunk.text
                    if tty and chunk.accepted:
                        text = f"\x1b[32m{text}\x1b[0m"
                    print(text, end="", flush=True)
                    st = stream_stats(eng)
                    if tty:
                        sys.stderr.write(f"\x1b7\x1b[999;1H[{st}]\x1b8")
            seconds = time.perf_counter() - start
            print(f"\n--- {stream_stats(eng)} ---")
            return tokens, seconds

    def stream_stats(eng: SpecEngine) -> str:
        t = eng.metrics().totals
        return (
            f"{t.emitted} tokens / {t.steps} target forwards = MAL {t.mean_accepted_length:.2f}, "
            f"draft acceptance {t.acceptance_rate:.0%}"
        )

    async def target_only() -> tuple[list[int], float]:
        async with SpecEngine(backend, tokenizer=tokenizer) as eng:
            await eng.generate(prompt, max_new_tokens=2)
            start = time.perf_counter()
            done = await eng.generate(prompt, params)
            return list(done.token_ids), time.perf_counter() - start

    spec_tokens, spec_s = anyio.run(speculative)
    base_tokens, base_s = anyio.run(target_only)
    print("\n--- side by side (same prompt, greedy) ---")
    print(f"{'target-only':<14}{len(base_tokens):>5} tokens  {base_s:6.2f}s  {len(base_tokens) / base_s:7.1f} tok/s")
    print(f"{'speculative':<14}{len(spec_tokens):>5} tokens  {spec_s:6.2f}s  {len(spec_tokens) / spec_s:7.1f} tok/s")
    print(f"speedup {base_s / spec_s:.2f}x; outputs identical: {spec_tokens == base_tokens}")
