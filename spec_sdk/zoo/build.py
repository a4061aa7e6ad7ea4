"""Build a zoo variant end to end, load a built one, and the `spec-sdk zoo` command.

A built zoo directory:

    zoo.json            manifest: variant, seed, data sizes, parameters, held-out losses
    target/             config.json, generation_config.json, model.safetensors (bf16), tokenizer
    draft/              same, for the draft model (same tokenizer)

Everything in progress lives in `<out>/.build/` (tokenizer, token blocks, checkpoints) and is
removed when the build completes, so rerunning an interrupted build picks up where it stopped.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import time
from pathlib import Path
from typing import Literal, Sequence

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from spec_sdk.zoo import data
from spec_sdk.zoo.chat import SPECIAL_TOKENS
from spec_sdk.zoo.tokenizer import save_tokenizer, train_tokenizer
from spec_sdk.zoo.train import heldout_loss, train_model
from spec_sdk.zoo.variants import VARIANTS, Variant, get_variant

Role = Literal["target", "draft"]
ROLES: tuple[Role, ...] = ("target", "draft")
MANIFEST = "zoo.json"
WORK = ".build"
EVAL_SOURCES = ("chat", "code", "humaneval")


def default_zoo_dir(variant: str = "full") -> Path:
    """Where the committed weights of `variant` live, inside the package."""
    return Path(__file__).parent / "weights" / variant


def default_model_dir(variant: str | None = None, role: Role = "target") -> Path:
    """The committed model directory the demo and benchmarks use by default.

    With no variant: the full zoo if it is built, else the tiny one (so a checkout without the
    full weights still runs, on a much weaker model).
    """
    if variant is None:
        variant = "full" if (default_zoo_dir("full") / MANIFEST).exists() else "tiny"
    return default_zoo_dir(variant) / role


def _raw_text(doc: data.Document) -> str:
    """A document without its special-token strings, for the BPE trainer."""
    text = doc.text
    for tok in SPECIAL_TOKENS:
        text = text.replace(tok, "\n")
    return text


def _pack(tokenizer: PreTrainedTokenizerBase, texts: list[str], context: int, max_blocks: int | None = None) -> torch.Tensor:
    """Tokenize documents (each `<s> ... </s>`), concatenate, cut into `[n, context]` blocks."""
    stream: list[int] = []
    for ids in tokenizer(texts)["input_ids"] if texts else []:
        stream.extend(ids)
        if max_blocks is not None and len(stream) >= max_blocks * context:
            break
    n = len(stream) // context if max_blocks is None else min(max_blocks, len(stream) // context)
    return torch.tensor(stream[: n * context], dtype=torch.int32).view(n, context)


def _prepare(v: Variant, work: Path, progress: bool) -> tuple[PreTrainedTokenizerBase, dict, dict]:
    """Tokenizer, token blocks (train + eval per source) and data sizes; cached in `work`."""
    tok_dir, blocks_path = work / "tokenizer", work / "blocks.pt"
    if blocks_path.exists() and (tok_dir / "tokenizer.json").exists():
        cached = torch.load(blocks_path, weights_only=True)
        if cached["variant"] == repr(v):  # a cache from other settings is rebuilt, not reused
            return AutoTokenizer.from_pretrained(str(tok_dir)), cached["blocks"], json.loads(cached["sizes"])
    say = print if progress else (lambda *a, **k: None)
    say(f"[zoo:{v.name}] reading ShareGPT, stdlib and HumanEval ...")
    corpus = data.build_corpus(v.seed, v.chat_chars, v.code_chars, v.heldout_chars)
    say(f"[zoo:{v.name}] training a {v.vocab_size}-token byte-level BPE tokenizer ...")
    tok_texts, total = [], 0
    for doc in corpus.train:
        if total >= v.tokenizer_chars:
            break
        tok_texts.append(_raw_text(doc))
        total += len(tok_texts[-1])
    tokenizer = train_tokenizer(tok_texts, v.vocab_size)
    save_tokenizer(tokenizer, tok_dir)
    say(f"[zoo:{v.name}] tokenizing ...")
    blocks = {"train": _pack(tokenizer, [d.text for d in corpus.train], v.context)}
    for source in ("chat", "code"):
        texts = [d.text for d in corpus.heldout if d.source == source]
        blocks[source] = _pack(tokenizer, texts, v.context, v.eval_blocks)
    blocks["humaneval"] = _pack(tokenizer, [d.text for d in data.humaneval_documents()], v.context, v.eval_blocks)
    sizes = {
        "train_chars": {s: corpus.chars("train", s) for s in ("chat", "code")},
        "train_docs": {s: sum(d.source == s for d in corpus.train) for s in ("chat", "code")},
        "heldout_chars": {s: corpus.chars("heldout", s) for s in ("chat", "code")},
        "tokenizer_train_chars": total,
        "train_tokens": int(blocks["train"].numel()),
        "eval_tokens": {s: int(blocks[s].numel()) for s in EVAL_SOURCES},
        "dropped_humaneval_contaminated_docs": corpus.dropped_contaminated,
        "humaneval_in_training": False,
    }
    torch.save({"blocks": blocks, "sizes": json.dumps(sizes), "variant": repr(v)}, blocks_path)
    return tokenizer, blocks, sizes


def _evaluate(model: PreTrainedModel, blocks: dict) -> dict[str, float]:
    """Held-out losses of the weights as saved: rounded to bf16, evaluated in float32."""
    model = model.to(torch.bfloat16).float()
    losses = {s: heldout_loss(model, blocks[s]) for s in EVAL_SOURCES}
    counts = {s: blocks[s].numel() for s in ("chat", "code")}
    losses["heldout"] = sum(losses[s] * counts[s] for s in counts) / max(1, sum(counts.values()))
    return losses


def _train_role(v: Variant, role: Role, tokenizer: PreTrainedTokenizerBase, blocks: dict, out_dir: Path, work: Path, progress: bool) -> dict:
    result_path = work / role / "result.json"
    if result_path.exists() and (out_dir / role / "model.safetensors").exists():
        return json.loads(result_path.read_text())
    spec = getattr(v, role)
    config = spec.llama_config(v.vocab_size, v.context)
    started = time.perf_counter()
    model = train_model(config, spec, blocks["train"], work / role, v.seed, desc=f"{v.name}/{role}", progress=progress)
    seconds = time.perf_counter() - started
    losses = _evaluate(model, blocks)
    model.to(torch.bfloat16).save_pretrained(str(out_dir / role))
    (out_dir / role / "model.safetensors").chmod(0o644)  # written via a private temp file (0600)
    tokenizer.save_pretrained(str(out_dir / role))
    result = {
        "params": sum(p.numel() for p in model.parameters()),
        "config": {k: getattr(config, k) for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                                   "num_key_value_heads", "intermediate_size", "tie_word_embeddings")},
        "steps": spec.steps,
        "batch_size": spec.batch_size,
        "tokens_seen": spec.steps * spec.batch_size * v.context,
        "train_seconds": round(seconds, 1),
        "heldout_loss": round(losses["heldout"], 4),
        "heldout_ppl": round(math.exp(losses["heldout"]), 2),
        "heldout_loss_by_source": {s: round(losses[s], 4) for s in EVAL_SOURCES},
    }
    if progress:
        by = ", ".join(f"{s} {losses[s]:.3f}" for s in EVAL_SOURCES)
        print(f"[zoo:{v.name}] {role}: held-out loss {losses['heldout']:.3f} "
              f"(perplexity {math.exp(losses['heldout']):.1f}); by source: {by}")
    result_path.write_text(json.dumps(result, indent=2))
    return result


def build(variant: str, out_dir: Path | str | None = None, resume: bool = True, progress: bool = True) -> Path:
    """Build tokenizer, target and draft of `variant` into `out_dir`; returns `out_dir`.

    With `resume`, a finished build is left as is and an interrupted one continues from its last
    checkpoint; without it, everything is rebuilt from scratch.
    """
    v = get_variant(variant)
    out = Path(out_dir) if out_dir is not None else default_zoo_dir(variant)
    work = out / WORK
    if not resume:
        for path in (work, *(out / r for r in ROLES)):
            shutil.rmtree(path, ignore_errors=True)
        (out / MANIFEST).unlink(missing_ok=True)
    elif (out / MANIFEST).exists() and not work.exists():
        built = json.loads((out / MANIFEST).read_text())["variant"]
        if built != variant:
            raise ValueError(f"{out} holds the {built!r} zoo; pick another directory or pass resume=False")
        return out  # already built
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # only a completed build has a manifest
    started = time.perf_counter()
    tokenizer, blocks, sizes = _prepare(v, work, progress)
    models = {role: _train_role(v, role, tokenizer, blocks, out, work, progress) for role in ROLES}
    manifest = {
        "variant": v.name,
        "seed": v.seed,
        "vocab_size": v.vocab_size,
        "context": v.context,
        "chat_format": "<|user|>\\n{user}\\n<|assistant|>\\n{assistant}</s> (see spec_sdk/zoo/chat.py)",
        "data": sizes,
        "models": models,
        "draft_to_target_params": round(models["draft"]["params"] / models["target"]["params"], 4),
        "build_seconds_last_run": round(time.perf_counter() - started, 1),
        "built_with": {"torch": torch.__version__, "transformers": _version("transformers"),
                       "tokenizers": _version("tokenizers"), "python": platform.python_version()},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    shutil.rmtree(work, ignore_errors=True)
    return out


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def _zoo_or_model_dir(variant_or_path: str | Path) -> Path:
    if isinstance(variant_or_path, str) and variant_or_path in VARIANTS:
        path = default_zoo_dir(variant_or_path)
        if not (path / MANIFEST).exists():
            raise FileNotFoundError(
                f"zoo variant {variant_or_path!r} is not built at {path}; "
                f"run `spec-sdk zoo build --variant {variant_or_path}`"
            )
        return path
    return Path(variant_or_path)


def resolve(variant_or_path: str | Path = "full", role: Role = "target") -> Path:
    """A variant name, a zoo directory (has zoo.json) or a model directory -> the model directory."""
    path = _zoo_or_model_dir(variant_or_path)
    return path / role if (path / MANIFEST).exists() else path


def load(
    variant_or_path: str | Path = "full", role: Role = "target", dtype: torch.dtype = torch.float32
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """(model, tokenizer) through the ordinary `from_pretrained` path, model in eval mode.

    Weights are stored in bf16; `dtype` (float32 by default) is what they are loaded as.
    """
    path = resolve(variant_or_path, role)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype)
    model.eval()
    return model, AutoTokenizer.from_pretrained(str(path))


def read_manifest(variant_or_path: str | Path = "full") -> dict:
    """The zoo.json of a variant name or zoo directory."""
    return json.loads((_zoo_or_model_dir(variant_or_path) / MANIFEST).read_text())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spec-sdk zoo", description="Build or inspect the model zoo.")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="train tokenizer, target and draft of a variant (resumable)")
    b.add_argument("--variant", choices=sorted(VARIANTS), default="tiny")
    b.add_argument("--out", type=Path, default=None, help="output directory (default: the package's zoo/weights/<variant>)")
    b.add_argument("--no-resume", action="store_true", help="start over instead of continuing an earlier run")
    b.add_argument("--quiet", action="store_true", help="no progress bar or messages")
    i = sub.add_parser("info", help="print the manifest (zoo.json) of a built variant or directory")
    i.add_argument("variant_or_path", nargs="?", default="full")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """`spec-sdk zoo ...`; `argv` is what follows `zoo` on the command line."""
    args = _parser().parse_args(argv)
    if args.command == "build":
        out = build(args.variant, args.out, resume=not args.no_resume, progress=not args.quiet)
        print(f"zoo {args.variant!r} built in {out}")
    else:
        print(json.dumps(read_manifest(args.variant_or_path), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
