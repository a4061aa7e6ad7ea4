"""The stdlib workload and the bench's route for a workload's proposer options."""

from __future__ import annotations

import ast
import functools
from typing import Any

from spec_sdk.bench import sdk_methods
from spec_sdk.workloads import STDLIB_MODULES, get_workload, load_workload, stdlib_function_prompts


@functools.lru_cache(maxsize=1)
def zoo_tokenizer() -> Any:
    from transformers import AutoTokenizer

    from spec_sdk.zoo.build import default_model_dir

    return AutoTokenizer.from_pretrained(str(default_model_dir()))


def test_stdlib_prompts_stop_before_the_body() -> None:
    prompts = stdlib_function_prompts(STDLIB_MODULES[:3])
    assert len(prompts) > 20
    for text in prompts:
        # the prompt is a def (under its class line for a method) ending with its docstring:
        # with `...` as the body it parses, and the real body is left for the model
        tree = ast.parse(text + ("    " if text.startswith("class") else "") + "    ...\n")
        func = tree.body[0].body[-1] if isinstance(tree.body[0], ast.ClassDef) else tree.body[0]
        assert isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)) and ast.get_docstring(func)
        assert len(func.body) == 2  # the docstring and the `...`


def test_stdlib_workload_is_seeded_and_fits() -> None:
    tok = zoo_tokenizer()
    a = load_workload("stdlib", tok, n=6, seed=0, max_new_tokens=96, context=512)
    assert a == load_workload("stdlib", tok, n=6, seed=0, max_new_tokens=96, context=512)
    assert a != load_workload("stdlib", tok, n=6, seed=1, max_new_tokens=96, context=512)
    assert len(a) == 6 and all(len(p) <= 512 - 96 for p in a)


def test_the_workload_gives_retrieval_its_corpus() -> None:
    options = get_workload("stdlib").proposer_options
    assert options["retrieval"]["corpus"] == "stdlib:*"
    methods, skipped = sdk_methods(["retrieval", "ngram"], 4, None, options)
    assert [m.name for m in methods] == ["retrieval k=4", "ngram k=4"] and not skipped
    assert dict(methods[0].proposers["retrieval"]) == dict(options["retrieval"])
    methods, skipped = sdk_methods(["retrieval"], 4, None)
    assert not methods and "needs a corpus" in skipped["retrieval"]
