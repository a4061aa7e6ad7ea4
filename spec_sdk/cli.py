"""The `spec-sdk` command: demo, generate, bench, zoo."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import anyio

from spec_sdk.types import SamplingParams


def _default_model() -> str:
    from spec_sdk.zoo.build import default_model_dir

    return str(default_model_dir())


def _sampling(args: argparse.Namespace) -> SamplingParams:
    return SamplingParams(
        temperature=args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        max_new_tokens=args.max_new_tokens,
        seed=args.seed,
    )


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None, help="local transformers model path (default: the zoo target)")
    p.add_argument("--proposer", action="append", default=None, help="proposer name (repeatable); default ngram")
    p.add_argument("-k", "--num-speculative-tokens", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)


def cmd_generate(args: argparse.Namespace) -> int:
    from spec_sdk.engine import SpecEngine

    model = args.model or _default_model()
    proposers = args.proposer or ["ngram"]

    async def run() -> None:
        async with SpecEngine(model, proposers=proposers, num_speculative_tokens=args.num_speculative_tokens) as eng:
            async for chunk in eng.stream(args.prompt, _sampling(args)):
                print(chunk.text if chunk.text else "", end="", flush=True)
            print()
            totals = eng.metrics().totals
            print(
                f"[{totals.emitted} tokens in {totals.steps} target forwards: "
                f"MAL {totals.mean_accepted_length:.2f}, acceptance {totals.acceptance_rate:.0%}]",
                file=sys.stderr,
            )

    anyio.run(run)
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    from transformers import AutoTokenizer

    from spec_sdk.backends.hf import HFBackend
    from spec_sdk.bench import Method, format_report, load_prompts, run_bench

    model = args.model or _default_model()
    backend = HFBackend(model)
    tokenizer = AutoTokenizer.from_pretrained(model)
    prompts = load_prompts(args.prompts)[: args.limit]
    methods = [Method(f"{name} k={args.num_speculative_tokens}", {name: {}}, args.num_speculative_tokens)
               for name in (args.proposer or ["ngram"])]
    report = run_bench(backend, tokenizer, prompts, methods, _sampling(args))
    report["model"] = model
    print(format_report(report))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=2))
        print(f"wrote {args.json}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from spec_sdk.demo import run_demo

    run_demo(args.model or _default_model(), args.prompt, args.max_new_tokens)
    return 0


def cmd_zoo(argv: list[str]) -> int:
    from spec_sdk.zoo.build import main as zoo_main

    return int(zoo_main(argv) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spec-sdk", description="Lossless speculative decoding.")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="stream one generation")
    gen.add_argument("prompt")
    _add_common(gen)
    bench = sub.add_parser("bench", help="target-only vs proposers on a prompt file")
    bench.add_argument("--prompts", required=True, help="JSONL ({'prompt': ...}) or one prompt per line")
    bench.add_argument("--limit", type=int, default=None)
    bench.add_argument("--json", default=None, help="write the report here")
    _add_common(bench)
    demo = sub.add_parser("demo", help="stream a speculative generation, then compare with target-only")
    demo.add_argument("--model", default=None)
    demo.add_argument("--prompt", default=None)
    demo.add_argument("--max-new-tokens", type=int, default=96)
    sub.add_parser("zoo", help="build the model zoo (spec-sdk zoo build --variant tiny)", add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["zoo"]:
        return cmd_zoo(argv[1:])
    args = build_parser().parse_args(argv)
    handlers: dict[str, Any] = {"generate": cmd_generate, "bench": cmd_bench, "demo": cmd_demo}
    start = time.perf_counter()
    code = int(handlers[args.command](args))
    if args.command != "generate":
        print(f"[{args.command} took {time.perf_counter() - start:.1f}s]", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
