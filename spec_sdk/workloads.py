"""The benchmark workloads: fixed, seeded prompt samples, returned as token ids that fit the context.

* `chat`: first user turns of held-out ShareGPT conversations, in the zoo chat format.
* `code`: HumanEval prompts, raw (a signature and docstring for the model to complete).
* `agentic`: multi-turn sessions whose later prompts carry the earlier turns' outputs, so text
  repeats across requests. Sessions cycle through three kinds:
  - `refine-code`: a HumanEval prompt, the target's answer, then "revise" and the prompt again;
  - `refine-chat`: a held-out chat question, the target's answer, then a request to revise it;
  - `history`: a held-out multi-turn ShareGPT conversation, turn by turn, with the real earlier
    assistant answers in every later prompt.
  The refine sessions need the target's own answers, so they are generated greedily when the
  workload is built (deterministic: greedy, fixed prompts).

Prompts are returned as token ids, so every method of a benchmark is fed exactly the same ids.
They must leave room for `max_new_tokens` inside the model's context: `chat` and `code` drop
prompts that are too long (a cut question or signature would be a different task), `agentic`
keeps `<s>` and the most recent tokens (agents cut their history from the left the same way).

`code` takes HumanEval from the front of a seeded permutation and `agentic` from the back (the
same for chat questions), so the two workloads use different problems.

* `stdlib`: the signature and docstring of functions and methods of a few standard-library
  modules, raw, verbatim from their files (a method under its `class` line); the answer the
  file holds is the body, which the prompt does not contain. The retrieval proposer gets the
  standard library's source as its corpus through the workload's `proposer_options`.
"""

from __future__ import annotations

import ast
import importlib.util
import math
import random
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import attrs
import torch

from spec_sdk.zoo.chat import Turn, chat_prompt, render_chat
from spec_sdk.zoo.data import load_humaneval_prompts, load_sharegpt_first_turns, sharegpt_conversations

WorkloadName = Literal["chat", "code", "agentic", "stdlib"]
SessionKind = Literal["refine-code", "refine-chat", "history"]

# Requests per agentic session; sessions cycle through the kinds in this order.
AGENTIC_TURNS = 3
SESSION_KINDS: tuple[SessionKind, ...] = ("refine-code", "refine-chat", "history")
REVISE_CHAT = "Please revise your answer: keep what is right, fix what is wrong, and write the whole answer again."
REVISE_CODE = "\n\n\n# Revised version of the code above, complete and corrected:\n"
# The stdlib workload's prompts come from these common pure-Python modules; the retrieval
# corpus is the whole stdlib source the zoo target was trained on (~9 MB, 2.7M zoo tokens).
STDLIB_MODULES = ("argparse", "calendar", "csv", "difflib", "fractions", "functools", "heapq", "json",
                  "shutil", "statistics", "string", "textwrap")
# The zoo target writes what is frequent in that code more than it quotes any one file, so a
# match must occur 64 times to be drafted from (measured: plugins/retrieval/README.md).
STDLIB_RETRIEVAL = {"corpus": "stdlib:*", "min_occurrences": 64}


@attrs.frozen
class WorkloadSpec:
    """A workload's default size, chosen so the full bench (every method, greedy and sampled, all
    three workloads) stays within ~15 min on a 2-core CPU with the full zoo target."""

    name: WorkloadName
    n: int
    max_new_tokens: int
    about: str
    # options the bench passes to these proposers on this workload (e.g. a retrieval corpus)
    proposer_options: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict, eq=False)


WORKLOADS: dict[str, WorkloadSpec] = {
    w.name: w
    for w in (
        # ~1.6k new tokens per method run. Measured on a busy 2-core CPU (a training job on both
        # cores), the full target costs ~10-13 ms per token, so the 30 runs (3 workloads x 2
        # temperatures x 5 methods) take ~9 min plus ~1 min of loading and warm-ups; idle, about half.
        WorkloadSpec("chat", 16, 96, "first user turns of held-out ShareGPT conversations, zoo chat format"),
        WorkloadSpec("code", 16, 96, "HumanEval prompts, raw"),
        WorkloadSpec("agentic", 6 * AGENTIC_TURNS, 96, f"sessions of {AGENTIC_TURNS} requests carrying earlier outputs"),
        WorkloadSpec("stdlib", 16, 96, "stdlib signature + docstring, raw; the body is only in the retrieval corpus",
                     proposer_options={"retrieval": STDLIB_RETRIEVAL}),
    )
}


def get_workload(name: str) -> WorkloadSpec:
    try:
        return WORKLOADS[name]
    except KeyError:
        raise ValueError(f"unknown workload {name!r}; known: {', '.join(WORKLOADS)}") from None


def _ids(tokenizer: Any, text: str) -> list[int]:
    return [int(t) for t in tokenizer(text)["input_ids"]]


def _fitting(tokenizer: Any, texts: Sequence[str], n: int, budget: int) -> list[list[int]]:
    """The first `n` texts whose ids fit in `budget` tokens (longer ones are skipped, not cut)."""
    out: list[list[int]] = []
    for text in texts:
        if len(out) >= n:
            break
        ids = _ids(tokenizer, text)
        if len(ids) <= budget:
            out.append(ids)
    return out


def _left_truncate(ids: list[int], budget: int) -> list[int]:
    """Keep the first token (`<s>`) and the most recent `budget - 1` tokens."""
    return ids if len(ids) <= budget else ids[:1] + ids[len(ids) - budget + 1 :]


def _humaneval_order(seed: int) -> list[str]:
    prompts = load_humaneval_prompts()
    random.Random(seed).shuffle(prompts)
    return prompts


def _chat_order(seed: int) -> list[str]:
    return load_sharegpt_first_turns(seed=seed)


def _greedy_answer(model: Any, ids: list[int], max_new_tokens: int, eos_ids: Sequence[int]) -> list[int]:
    """The target's greedy answer to `ids`, without its EOS (the refine prompt re-renders the turn)."""
    input_ids = torch.tensor([ids], dtype=torch.long, device=model.device)
    out = model.generate(
        input_ids,
        attention_mask=torch.ones_like(input_ids),
        do_sample=False,
        max_new_tokens=max_new_tokens,
        eos_token_id=list(eos_ids),
        pad_token_id=model.generation_config.pad_token_id,
    )
    answer = [int(t) for t in out[0, len(ids) :].tolist()]
    return [t for t in answer if t not in eos_ids]


def _refine_code(model: Any, tokenizer: Any, base: str, budget: int, max_new_tokens: int, eos: Sequence[int]) -> list[list[int]]:
    text, prompts = base, []
    for turn in range(AGENTIC_TURNS):
        ids = _left_truncate(_ids(tokenizer, text), budget)
        prompts.append(ids)
        if turn + 1 < AGENTIC_TURNS:
            answer = tokenizer.decode(_greedy_answer(model, ids, max_new_tokens, eos), skip_special_tokens=True)
            text = text + answer + REVISE_CODE + base
    return prompts


def _refine_chat(model: Any, tokenizer: Any, question: str, budget: int, max_new_tokens: int, eos: Sequence[int]) -> list[list[int]]:
    turns, prompts = [Turn("user", question)], []
    for turn in range(AGENTIC_TURNS):
        ids = _left_truncate(_ids(tokenizer, render_chat(turns, add_generation_prompt=True)), budget)
        prompts.append(ids)
        if turn + 1 < AGENTIC_TURNS:
            answer = tokenizer.decode(_greedy_answer(model, ids, max_new_tokens, eos), skip_special_tokens=True)
            turns += [Turn("assistant", answer.strip()), Turn("user", REVISE_CHAT)]
    return prompts


def _history_sessions(seed: int) -> list[tuple[Turn, ...]]:
    """Held-out conversations with at least AGENTIC_TURNS user turns that alternate user/assistant."""
    convs = [
        turns
        for _, turns in sharegpt_conversations("heldout")
        if len(turns) >= 2 * AGENTIC_TURNS - 1
        and all(t.role == ("user" if i % 2 == 0 else "assistant") for i, t in enumerate(turns[: 2 * AGENTIC_TURNS - 1]))
    ]
    random.Random(seed).shuffle(convs)
    return convs


def _history(tokenizer: Any, turns: tuple[Turn, ...], budget: int) -> list[list[int]]:
    # request j holds user turns 0..j and the real assistant answers between them
    return [
        _left_truncate(_ids(tokenizer, render_chat(turns[: 2 * j + 1], add_generation_prompt=True)), budget)
        for j in range(AGENTIC_TURNS)
    ]


def _agentic(tokenizer: Any, n: int, seed: int, budget: int, max_new_tokens: int, model: Any) -> list[list[int]]:
    if model is None:
        raise ValueError("the agentic workload needs the target model: its refine sessions carry the model's own answers")
    eos = _eos_ids(model)
    code_bases = _humaneval_order(seed)[::-1]  # from the back: the code workload takes the front
    chat_bases = _chat_order(seed)[::-1]
    histories = _history_sessions(seed)
    prompts: list[list[int]] = []
    for s in range(math.ceil(n / AGENTIC_TURNS)):
        kind, i = SESSION_KINDS[s % len(SESSION_KINDS)], s // len(SESSION_KINDS)
        if kind == "refine-code":
            prompts += _refine_code(model, tokenizer, code_bases[i], budget, max_new_tokens, eos)
        elif kind == "refine-chat":
            prompts += _refine_chat(model, tokenizer, chat_bases[i], budget, max_new_tokens, eos)
        else:
            prompts += _history(tokenizer, histories[i], budget)
    return prompts[:n]


def _module_files(name: str) -> list[Path]:
    spec = importlib.util.find_spec(name)
    if spec is None or spec.origin is None:
        raise ValueError(f"stdlib module {name!r} not found")
    origin = Path(spec.origin)
    return sorted(origin.parent.rglob("*.py")) if spec.submodule_search_locations is not None else [origin]


def stdlib_function_prompts(modules: Sequence[str] = STDLIB_MODULES) -> list[str]:
    """Every documented function of `modules` with at least two statements after its docstring:
    its decorators, `def` line(s) and docstring, verbatim (a method under its class's line)."""
    prompts: list[str] = []
    for path in (f for m in modules for f in _module_files(m)):
        source = path.read_text(encoding="utf-8")
        lines = source.splitlines(keepends=True)
        for node, owner in _functions(ast.parse(source)):
            if ast.get_docstring(node) is None or len(node.body) < 3:
                continue
            head = "" if owner is None else lines[owner.lineno - 1]
            if owner is not None and not head.rstrip().endswith(":"):
                continue  # a class statement over several lines: its first line would be cut
            start = min([d.lineno for d in node.decorator_list] + [node.lineno]) - 1
            prompts.append(head + "".join(lines[start : node.body[0].end_lineno]))
    return prompts


def _functions(tree: ast.Module) -> list[tuple[ast.FunctionDef | ast.AsyncFunctionDef, ast.ClassDef | None]]:
    out: list[tuple[ast.FunctionDef | ast.AsyncFunctionDef, ast.ClassDef | None]] = []
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            out.append((node, None))
        elif isinstance(node, ast.ClassDef):
            out += [(f, node) for f in node.body if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef))]
    return out


def _eos_ids(model: Any) -> tuple[int, ...]:
    eos = model.generation_config.eos_token_id
    if eos is None:
        return ()
    return tuple(int(e) for e in eos) if isinstance(eos, (list, tuple)) else (int(eos),)


def load_workload(
    name: str,
    tokenizer: Any,
    n: int | None = None,
    seed: int = 0,
    *,
    max_new_tokens: int | None = None,
    context: int = 512,
    model: Any = None,
) -> list[list[int]]:
    """The prompts (token ids, `<s>` included) of workload `name`: a fixed sample for `seed`.

    Each prompt leaves `max_new_tokens` (default: the workload's) free in a `context`-token
    window. `agentic` needs `model` (the target) to write the answers its refine sessions carry.
    """
    spec = get_workload(name)
    n = spec.n if n is None else n
    max_new = spec.max_new_tokens if max_new_tokens is None else max_new_tokens
    budget = context - max_new
    if budget < 8:
        raise ValueError(f"max_new_tokens={max_new} leaves no room for a prompt in a {context}-token context")
    if spec.name == "chat":
        return _fitting(tokenizer, [chat_prompt(q) for q in _chat_order(seed)], n, budget)
    if spec.name == "code":
        return _fitting(tokenizer, _humaneval_order(seed), n, budget)
    if spec.name == "stdlib":
        texts = stdlib_function_prompts()
        random.Random(seed).shuffle(texts)
        return _fitting(tokenizer, texts, n, budget)
    return _agentic(tokenizer, n, seed, budget, max_new, model)
