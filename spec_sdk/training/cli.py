"""`spec-sdk train-speculator` (distil an MLP or LSTM speculator from a target) and
`spec-sdk distill-draft` (fine-tune a draft model on the target's rollouts)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Sequence

from spec_sdk.training.recipe import RECIPES, recipe


def _add_run_arguments(p: argparse.ArgumentParser, out_help: str, recipe_help: str, batch_help: str) -> None:
    """What both commands take: the target, where to write, the recipe, how long and how hard."""
    p.add_argument("--target", required=True, help="target model directory, zoo directory or zoo variant (full, tiny)")
    p.add_argument("--out", required=True, type=Path, help=out_help)
    p.add_argument("--recipe", choices=sorted(RECIPES), default=None, help=recipe_help)
    p.add_argument("--steps", type=int)
    p.add_argument("--batch-size", type=int, help=batch_help)
    p.add_argument("--lr", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--quiet", action="store_true")


def add_arguments(p: argparse.ArgumentParser) -> None:
    _add_run_arguments(p, "checkpoint directory to write",
                       "defaults for everything below (default: the zoo variant's, else full)", "sequences per step")
    p.add_argument("--arch", choices=("mlp", "lstm"), required=True)
    p.add_argument("--weight-decay", type=float, help="AdamW weight decay of the matrices")
    p.add_argument("--n-predict", type=int, help="heads, i.e. the longest draft")
    p.add_argument("--inner-dim", type=int)
    p.add_argument("--prompts", type=int, help="training prompt chunks the target continues")
    p.add_argument("--heldout-prompts", type=int)
    p.add_argument("--prompt-len", type=int)
    p.add_argument("--gen-len", type=int)
    p.add_argument("--sample-share", type=float, help="share of continuations sampled rather than greedy")
    p.add_argument("--labels", choices=("hard", "argmax", "soft"))
    p.add_argument("--no-prompt-positions", action="store_true", help="train only where labels are generated tokens")
    p.add_argument("--work", type=Path, default=None,
                   help="rollouts and checkpoints (default: OUT/.work, removed when done; a given one is kept)")
    p.add_argument("--aliases", action="store_true",
                   help="write tied tensors under every name (what Arctic's vLLM loader reads for an LSTM)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="spec-sdk train-speculator", description=__doc__)
    add_arguments(parser)
    return run_args(parser.parse_args(argv))


def run_args(args: argparse.Namespace) -> int:
    import torch

    from spec_sdk.training.run import run
    from spec_sdk.zoo.build import resolve

    target = resolve(args.target, "target")
    name = args.recipe or _variant_recipe(target)
    config = recipe(
        name, arch=args.arch, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
        weight_decay=args.weight_decay, n_predict=args.n_predict,
        inner_dim=args.inner_dim, prompts=args.prompts, heldout_prompts=args.heldout_prompts,
        prompt_len=args.prompt_len, gen_len=args.gen_len, sample_share=args.sample_share, labels=args.labels,
        use_prompt=False if args.no_prompt_positions else None, seed=args.seed,
    )
    if args.quiet:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the weight-loading bar
    else:
        print(f"[train-speculator] {args.arch} for {target}, recipe {name!r}, {torch.get_num_threads()} thread(s)")
    run(target, args.out, config, work=args.work, progress=not args.quiet, aliases=args.aliases, name=args.target)
    return 0


def add_distill_arguments(p: argparse.ArgumentParser) -> None:
    _add_run_arguments(p, "model directory to write",
                       "which rollouts (a speculator recipe's data; default: the zoo variant's, else full)",
                       "rollouts per step")
    p.add_argument("--draft", default=None, help="draft model directory (default: the target's zoo draft)")
    p.add_argument("--work", type=Path, default=None,
                   help="rollout cache (default: OUT/.work, removed when done; a given one is kept, and "
                        "train-speculator's --work with the same recipe shares it)")


def run_distill_args(args: argparse.Namespace) -> int:
    from spec_sdk.training.draft import DraftDistillConfig, run
    from spec_sdk.zoo.build import resolve

    target = resolve(args.target, "target")
    draft = Path(args.draft) if args.draft is not None else resolve(args.target, "draft")
    if draft == target:
        from spec_sdk.errors import ConfigError

        raise ConfigError(f"{args.target} is not a zoo with a draft: give --draft")
    name = args.recipe or _variant_recipe(target)
    data = recipe(name)
    defaults = {"tiny": {"steps": 80, "batch_size": 8}}.get(name, {})
    given = {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed}
    config = DraftDistillConfig(data, **{**defaults, **{k: v for k, v in given.items() if v is not None}})
    if args.quiet:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
    else:
        print(f"[distill-draft] {draft} towards {target}, rollouts of recipe {name!r}")
    run(target, draft, args.out, config, work=args.work, progress=not args.quiet,
        names=(args.target, args.draft or f"the {args.target} zoo's draft"))
    return 0


def _variant_recipe(target: Path) -> str:
    """The recipe named like the target's zoo variant, else full."""
    from spec_sdk.zoo.build import MANIFEST

    manifest = target.parent / MANIFEST
    if manifest.exists():
        import json

        name = json.loads(manifest.read_text()).get("variant", "full")
        return name if name in RECIPES else "full"
    return "full"


if __name__ == "__main__":
    raise SystemExit(main())
