"""The `spec-sdk` command: demo, generate, bench, zoo, train-speculator, distill-draft."""

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
    p.add_argument("--backend", choices=("hf", "native"), default="hf",
                   help="target backend: hf (any transformers model) or native (Llama family, KV slots, batched trees)")


def _backend(kind: str, model: str | Path) -> Any:
    """The target as the chosen backend (a local model directory)."""
    if kind == "native":
        from spec_sdk.backends.native import NativeBackend

        return NativeBackend(model)
    from spec_sdk.backends.hf import HFBackend

    return HFBackend(model)


def cmd_generate(args: argparse.Namespace) -> int:
    from spec_sdk.engine import SpecEngine

    model = args.model or _default_model()
    proposers = args.proposer or ["ngram"]

    target: Any = model
    tokenizer = None
    if args.backend == "native":
        from transformers import AutoTokenizer

        target, tokenizer = _backend("native", model), AutoTokenizer.from_pretrained(model)

    async def run() -> None:
        async with SpecEngine(target, tokenizer=tokenizer, proposers=proposers,
                              num_speculative_tokens=args.num_speculative_tokens) as eng:
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
    if args.prompts is None:
        return _bench_workloads(args)
    from transformers import AutoTokenizer

    from spec_sdk.bench import Method, format_report, load_prompts, run_bench

    # the bench parser leaves these unset so workload mode can tell "not given" from a value
    args.temperature = 0.0 if args.temperature is None else args.temperature
    args.max_new_tokens = 64 if args.max_new_tokens is None else args.max_new_tokens
    model = args.model or _default_model()
    backend = _backend(args.backend, model)
    tokenizer = AutoTokenizer.from_pretrained(model)
    prompts = load_prompts(args.prompts)[: args.limit]
    methods = [Method(f"{name} k={args.num_speculative_tokens}", {name: {}}, args.num_speculative_tokens)
               for name in (args.proposer or ["ngram"])]
    report = run_bench(backend, tokenizer, prompts, methods, _sampling(args))
    report["model"] = model
    report["backend"] = args.backend
    print(format_report(report))
    _write_json(report, args.json)
    return 0


def _write_json(report: dict[str, Any], path: str | None) -> None:
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(report, indent=2))
        print(f"wrote {path}")


def _bench_models(args: argparse.Namespace) -> tuple[Path, Path | None]:
    """The target directory and the draft directory (None: no draft, HF assisted is skipped).

    `--model`/`--draft` take a zoo variant name (`full`, `tiny`), a zoo directory or a model
    directory. With no `--draft`, a zoo target's sibling `draft/` is used when there is one.
    """
    from spec_sdk.zoo.build import MANIFEST, resolve

    target = resolve(args.model, "target") if args.model else Path(_default_model())
    if args.draft:
        return target, resolve(args.draft, "draft")
    sibling = target.parent / "draft"
    return target, sibling if (target.parent / MANIFEST).exists() and sibling.is_dir() else None


def _bench_workloads(args: argparse.Namespace) -> int:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from spec_sdk.bench import WorkloadBenchConfig, format_workload_report, run_workload_bench

    target_dir, draft_dir = _bench_models(args)
    model = AutoModelForCausalLM.from_pretrained(str(target_dir), dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(str(target_dir))
    draft = None
    if draft_dir is not None:
        draft = AutoModelForCausalLM.from_pretrained(str(draft_dir), dtype=torch.float32).eval()
    config = WorkloadBenchConfig(
        workloads=tuple(w.strip() for w in args.workload.split(",") if w.strip()),
        temperatures=(0.0, 0.8) if args.temperature is None else (args.temperature,),
        n=args.n,
        max_new_tokens=args.max_new_tokens,
        k=args.num_speculative_tokens,
        proposers=tuple(args.proposer) if args.proposer else None,
        hf_lookup_tokens=args.hf_lookup_tokens,
        seed=0 if args.seed is None else args.seed,
        sweep=tuple(int(k) for k in args.sweep.split(",") if k.strip()) if args.sweep else (),
        adaptive=not args.no_adaptive,
    )
    backend = _backend(args.backend, target_dir) if args.backend != "hf" else None
    report = run_workload_bench(model, tokenizer, draft, config, log=lambda m: print(m, file=sys.stderr, flush=True),
                                backend=backend)
    report["backend"] = args.backend
    report["model"], report["draft"] = str(target_dir), None if draft_dir is None else str(draft_dir)
    print(format_workload_report(report))
    _write_json(report, args.json)
    if args.plot:
        from spec_sdk.plot import plot_workload_report

        print(f"wrote {plot_workload_report(report, args.plot)}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from spec_sdk.demo import run_demo

    run_demo(args.model or _default_model(), args.prompt, args.max_new_tokens)
    return 0


def cmd_train_speculator(args: argparse.Namespace) -> int:
    from spec_sdk.training.cli import run_args

    return run_args(args)


def cmd_distill_draft(args: argparse.Namespace) -> int:
    from spec_sdk.training.cli import run_distill_args

    return run_distill_args(args)


def cmd_zoo(argv: list[str]) -> int:
    from spec_sdk.zoo.build import main as zoo_main

    return int(zoo_main(argv) or 0)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spec-sdk", description="Lossless speculative decoding.")
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="stream one generation")
    gen.add_argument("prompt")
    _add_common(gen)
    bench = sub.add_parser("bench", help="target-only vs proposers vs HF generate(), on workloads or a prompt file")
    bench.add_argument("--workload", default="code,chat,agentic",
                       help="comma-separated workloads: code, chat, agentic, stdlib (used when --prompts is not given)")
    bench.add_argument("--prompts", default=None, help="instead of workloads: JSONL ({'prompt': ...}) or one prompt per line")
    bench.add_argument("--limit", type=int, default=None, help="with --prompts: use the first N prompts")
    bench.add_argument("--n", type=int, default=None, help="prompts per workload (default: each workload's own)")
    bench.add_argument("--draft", default=None, help="draft model for HF assisted generation (default: the zoo's)")
    bench.add_argument("--sweep", default="", help="more draft lengths for every single proposer, e.g. 2,6,8")
    bench.add_argument("--no-adaptive", action="store_true", help="leave out the adaptive policy")
    bench.add_argument("--hf-lookup-tokens", type=int, default=10, help="prompt_lookup_num_tokens for the HF baseline")
    bench.add_argument("--json", default=None, help="write the report here")
    bench.add_argument("--plot", default=None, help="workloads: write a PNG of speedup and MAL here")
    _add_common(bench)
    # unset unless given: prompt-file mode then uses 0.0 / 64, workload mode both 0 and 0.8 and
    # each workload's own length
    bench.set_defaults(temperature=None, max_new_tokens=None)
    demo = sub.add_parser("demo", help="stream a speculative generation, then compare with target-only")
    demo.add_argument("--model", default=None)
    demo.add_argument("--prompt", default=None)
    demo.add_argument("--max-new-tokens", type=int, default=96)
    sub.add_parser("zoo", help="build the model zoo (spec-sdk zoo build --variant tiny)", add_help=False)
    from spec_sdk.training.cli import add_arguments as add_training_arguments
    from spec_sdk.training.cli import add_distill_arguments

    add_training_arguments(sub.add_parser(
        "train-speculator", help="distil an MLP or LSTM speculator from a target (spec_sdk.training)"))
    add_distill_arguments(sub.add_parser(
        "distill-draft", help="fine-tune a draft model on the target's rollouts (spec_sdk.training.draft)"))
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["zoo"]:
        return cmd_zoo(argv[1:])
    args = build_parser().parse_args(argv)
    handlers: dict[str, Any] = {"generate": cmd_generate, "bench": cmd_bench, "demo": cmd_demo,
                                "train-speculator": cmd_train_speculator, "distill-draft": cmd_distill_draft}
    start = time.perf_counter()
    code = int(handlers[args.command](args))
    if args.command != "generate":
        print(f"[{args.command} took {time.perf_counter() - start:.1f}s]", file=sys.stderr)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
