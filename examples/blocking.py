"""The blocking API: one call, one completion, no event loop to manage.

    .venv/bin/python examples/blocking.py                     # the committed full zoo model
    .venv/bin/python examples/blocking.py --model tiny "def add(a, b):"

Runs the prompt twice, speculative (n-gram prompt lookup) and target-only, and shows that the
tokens are the same: speculation changes the speed, never the output.
"""

from __future__ import annotations

import argparse
import time

import spec_sdk
from spec_sdk.zoo import default_model_dir, resolve

PROMPT = (
    "def fibonacci(n):\n"
    "    if n < 2:\n"
    "        return n\n"
    "    return fibonacci(n - 1) + fibonacci(n - 2)\n\n\n"
    "def factorial(n):\n"
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("prompt", nargs="?", default=PROMPT)
    parser.add_argument("--model", default=str(default_model_dir()), help="zoo variant (tiny, full) or model dir")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    args = parser.parse_args(argv)
    model = str(resolve(args.model))

    start = time.perf_counter()
    # Each call starts and stops its own engine; a program with many requests keeps a
    # SpecEngine open instead (see web_app.py).
    done = spec_sdk.generate(model, args.prompt, proposers=["ngram"], max_new_tokens=args.max_new_tokens)
    seconds = time.perf_counter() - start
    print(args.prompt + (done.text or ""))
    stats = done.stats
    print(
        f"--- {len(done.token_ids)} tokens in {seconds:.2f}s, finish: {done.finish_reason}; "
        f"{stats.steps} target forwards, mean accepted length {stats.mean_accepted_length:.2f}, "
        f"draft acceptance {stats.acceptance_rate:.0%}"
    )

    # no proposer: plain target-only decoding, the output speculation must reproduce
    baseline = spec_sdk.generate(model, args.prompt, max_new_tokens=args.max_new_tokens)
    print(f"--- same tokens as target-only decoding: {baseline.token_ids == done.token_ids}")


if __name__ == "__main__":
    main()
