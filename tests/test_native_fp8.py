"""FP8 (e4m3, per-output-channel scales): quantisation error bounds, the dequantising CPU path
against `torch._scaled_mm` (its CPU kernel), speculative decoding on an FP8 backend equal to its
own target-only output, and the quality report on the zoo target (logit error and greedy
agreement against float32 and bf16)."""

from __future__ import annotations

import anyio
import pytest
import torch

from spec_sdk import SamplingParams
from spec_sdk.backends.base import ScoreItem
from spec_sdk.backends.native import NativeBackend
from spec_sdk.backends.native.fp8 import (
    E4M3_MAX,
    Fp8Weight,
    dequant_linear,
    dequantize,
    fp8_linear,
    quantize,
    scaled_mm_linear,
)
from spec_sdk.proposers.ngram import NgramProposer
from spec_sdk.testing import run_concurrently, tiny_llama
from spec_sdk.types import Draft
from spec_sdk.zoo.build import default_zoo_dir, resolve


def test_quantize_keeps_each_row_within_e4m3_precision():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(64, 48, generator=g) * torch.logspace(-3, 2, 64)[:, None]  # rows of very different scale
    q = quantize(w)
    assert q.q.dtype == torch.float8_e4m3fn and q.scale.shape == (64,)
    torch.testing.assert_close(q.q.to(torch.float32).abs().amax(1), torch.full((64,), E4M3_MAX))
    err = (dequantize(q, torch.float32) - w).abs()
    # 3 mantissa bits: half a step is 2^-4 relative for normals, 2^-10 of the scale for subnormals
    bound = torch.maximum(w.abs() * 2**-4, q.scale[:, None] * 2**-10)
    assert bool((err <= bound * 1.0001).all())
    zero = quantize(torch.zeros(2, 16))
    assert torch.equal(dequantize(zero, torch.float32), torch.zeros(2, 16))


def test_dequantising_path_equals_scaled_mm():
    """The CPU path and `torch._scaled_mm` (row-wise scales, as the GPU path calls it) agree, so the
    GPU call's layouts and scale shapes are exercised here too."""
    g = torch.Generator().manual_seed(1)
    w = quantize(torch.randn(96, 64, generator=g))
    x = torch.randn(3, 5, 64, generator=g)
    bias = torch.randn(96, generator=g)
    expected = dequant_linear(x, w, bias)
    assert expected.shape == (3, 5, 96)
    torch.testing.assert_close(scaled_mm_linear(x, w, bias), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fp8_linear(x, w, bias), expected)  # CPU: the dequantising path
    dense = torch.randn(7, 64, generator=g)
    torch.testing.assert_close(fp8_linear(x, dense, None), torch.nn.functional.linear(x, dense))


def test_fp8_backend_quantises_decoder_matmuls_only(tiny_model):
    backend = NativeBackend(tiny_model, max_slots=1, fp8=True)
    layer = backend.weights.layers[0]
    assert all(isinstance(getattr(layer, n), Fp8Weight) for n in ("qkv", "o", "gate_up", "down"))
    assert isinstance(backend.weights.head, torch.Tensor) and isinstance(backend.weights.embed, torch.Tensor)
    dense = NativeBackend(tiny_model, max_slots=1)
    assert backend.memory()["weight_bytes"] < dense.memory()["weight_bytes"]


def test_speculation_on_fp8_equals_its_own_target_only():
    model = tiny_llama(seed=3)
    backend = NativeBackend(model, max_slots=4, fp8=True)
    prompts = [[1, 2, 3, 1, 2, 3, 1, 2], [5, 9, 5, 9, 5], [7], [4, 4, 4, 4, 4, 4]]
    params = [SamplingParams(max_new_tokens=24)] * len(prompts)
    base, _ = anyio.run(run_concurrently, backend, [], prompts, params, 4)
    spec, metrics = anyio.run(run_concurrently, backend, [NgramProposer(min_n=1, max_n=3)], prompts, params, 4)
    assert metrics.totals.accepted > 0
    assert [c.token_ids for c in spec] == [c.token_ids for c in base]


def _teacher_forced(backend: NativeBackend, tokens: list[int]) -> torch.Tensor:
    backend.add("q", tokens[:1])
    (res,) = backend.score([ScoreItem("q", tokens[0], Draft(tokens=tokens[1:]))])
    backend.remove("q")
    return res.logits.to(torch.float32)


def _greedy(backend: NativeBackend, prompt: list[int], n: int) -> list[int]:
    (done,), _ = anyio.run(run_concurrently, backend, [], [prompt], [SamplingParams(max_new_tokens=n)], 1)
    return list(done.token_ids)


def fp8_quality_report(path, tokens: list[int], prompts: list[list[int]], n_new: int = 48) -> dict[str, dict[str, float]]:
    """Logit error and greedy agreement of FP8 and bf16 against float32, on the same model."""
    ref = NativeBackend(path, max_slots=1, dtype=torch.float32)
    variants = {
        "fp8": NativeBackend(path, max_slots=1, dtype=torch.float32, fp8=True),
        "bf16": NativeBackend(path, max_slots=1, dtype=torch.bfloat16),
    }
    ref_logits = _teacher_forced(ref, tokens)
    ref_outputs = [_greedy(ref, p, n_new) for p in prompts]
    scale = ref_logits.std().item()
    report = {}
    for name, backend in variants.items():
        logits = _teacher_forced(backend, tokens)
        err = (logits - ref_logits).abs()
        outputs = [_greedy(backend, p, n_new) for p in prompts]
        prefix = [next((i for i, (a, b) in enumerate(zip(o, r)) if a != b), len(r)) for o, r in zip(outputs, ref_outputs)]
        report[name] = {
            "max_abs_logit_err": err.max().item(),
            "mean_abs_logit_err": err.mean().item(),
            "rel_err_vs_logit_std": err.mean().item() / scale,
            "top1_agreement": (logits.argmax(-1) == ref_logits.argmax(-1)).float().mean().item(),
            "greedy_tokens_equal": sum(a == b for o, r in zip(outputs, ref_outputs) for a, b in zip(o, r))
            / sum(map(len, ref_outputs)),
            "greedy_mean_common_prefix": sum(prefix) / len(prefix),
        }
    return report


def test_fp8_quality_on_the_zoo_target():
    if not (default_zoo_dir("full") / "zoo.json").exists():
        pytest.skip("the full zoo is not built")
    from transformers import AutoTokenizer

    path = resolve("full", "target")
    tok = AutoTokenizer.from_pretrained(str(path))
    text = (
        "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n    a, b = 0, 1\n    for _ in range(n):\n"
        "        a, b = b, a + b\n    return a\n\n<|user|>\nWhat is the capital of France, and why is it famous?\n"
        "<|assistant|>\nParis is the capital of France. It is famous for its art, its food and its history."
    )
    tokens = tok.encode(text)[:200]
    prompts = [tok.encode("def add(a, b):\n"), tok.encode("<|user|>\nTell me about the sea.\n<|assistant|>\n"),
               tok.encode("import os\nimport sys\n\n\ndef main():\n")]
    report = fp8_quality_report(path, tokens, prompts)
    print("\nFP8 / bf16 quality vs float32 (zoo full target):")
    for name, row in report.items():
        print(f"  {name}: " + ", ".join(f"{k}={v:.4f}" for k, v in row.items()))
    assert report["fp8"]["top1_agreement"] >= 0.9
    assert report["fp8"]["rel_err_vs_logit_std"] < 0.1
    assert report["bf16"]["top1_agreement"] >= 0.9
