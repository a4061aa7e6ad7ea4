"""The native backend on a CUDA GPU: the same logits as on the CPU, CUDA-graph replays equal to
eager forwards for mixed batches of chains and trees, the FP8 tensor-core path equal to the
dequantising path, and lossless greedy speculation through graphs. Run with `pytest -m gpu` on a
machine with a GPU; skipped elsewhere."""

from __future__ import annotations

import random

import anyio
import pytest
import torch

from spec_sdk import Draft, SamplingParams
from spec_sdk.backends.base import ScoreItem
from spec_sdk.backends.native import NativeBackend
from spec_sdk.backends.native.fp8 import dequant_linear, has_fp8_matmul, quantize, scaled_mm_linear
from spec_sdk.proposers.ngram import NgramProposer
from spec_sdk.testing import reference_greedy, run_concurrently, tie_aware_equal, tiny_llama
from spec_sdk.zoo.build import default_zoo_dir, resolve

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


def _zoo_target():
    variant = "full" if (default_zoo_dir("full") / "zoo.json").exists() else "tiny"
    return resolve(variant, "target")


def _steps(backends, seed, n_requests=9, n_steps=4, vocab=64):
    """Drive several backends through the same mixed batches; yield their results per step."""
    rng = random.Random(seed)
    seqs = {f"r{i}": [rng.randrange(vocab) for _ in range(rng.randint(1, 40))] for i in range(n_requests)}
    for b in backends:
        for rid, seq in seqs.items():
            b.add(rid, seq)
    for _ in range(n_steps):
        items = []
        for rid, seq in seqs.items():
            n = rng.randint(0, 6)
            tokens = [rng.randrange(vocab) for _ in range(n)]
            kind = rng.choice(["chain", "tree"])
            draft = None if not n else Draft(tokens=tokens, parents=None if kind == "chain" else
                                             [rng.randrange(-1, i) for i in range(n)])
            items.append(ScoreItem(rid, seq[-1], draft, want_hidden=True))
        results = [b.score(items) for b in backends]
        yield items, results
        for item in items:
            n = 0 if item.draft is None else len(item.draft)
            path = []
            if n:
                node = rng.randrange(-1, n)
                parents = item.draft.parents or tuple(range(-1, n - 1))  # type: ignore[union-attr]
                while node != -1:
                    path.insert(0, node)
                    node = parents[node]
            for b in backends:
                b.commit(item.request_id, path)
            seqs[item.request_id] += [item.draft.tokens[i] for i in path] + [rng.randrange(vocab)]  # type: ignore[union-attr]
    for b in backends:
        for rid in seqs:
            b.remove(rid)


def test_cuda_logits_equal_cpu_logits():
    model = tiny_llama(seed=2, dtype=torch.float32)
    cpu = NativeBackend(model, max_slots=10)
    gpu = NativeBackend(model, max_slots=10, device="cuda")
    assert gpu.kv.k.is_cuda and gpu.dtype == torch.float32
    for items, (on_cpu, on_gpu) in _steps([cpu, gpu], seed=0):
        for a, b in zip(on_cpu, on_gpu):
            torch.testing.assert_close(b.logits.cpu(), a.logits, rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(b.hidden.cpu(), a.hidden, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_cuda_graph_replays_equal_eager(dtype):
    path = _zoo_target()
    eager = NativeBackend(path, max_slots=16, device="cuda", dtype=dtype)
    graphs = NativeBackend(path, max_slots=16, device="cuda", dtype=dtype, cuda_graphs=True)
    agree, rows = 0, 0
    for seed in range(3):
        for items, (a, b) in _steps([eager, graphs], seed=seed, vocab=eager.vocab_size):
            for x, y in zip(a, b):
                if dtype == torch.float32:
                    torch.testing.assert_close(y.logits, x.logits, rtol=1e-4, atol=1e-4)
                else:  # bf16 logits of size ~10 are 1/16 apart: compare decisions and mean error
                    assert (y.logits.float() - x.logits.float()).abs().mean() < 0.1
                agree += int((y.logits.argmax(-1) == x.logits.argmax(-1)).sum())
                rows += x.logits.shape[0]
    assert agree >= 0.97 * rows
    assert graphs.graphs.replays > 0 and graphs.graphs.graphs
    assert len(eager) == len(graphs) == 0


def test_graph_outputs_are_not_overwritten_by_the_next_replay():
    graphs = NativeBackend(tiny_llama(seed=4, dtype=torch.float32), max_slots=2, device="cuda", cuda_graphs=True)
    graphs.add("a", [1, 2, 3])
    (first,) = graphs.score([ScoreItem("a", 3)])
    kept = first.logits.clone()
    graphs.commit("a", [])
    graphs.score([ScoreItem("a", 9)])
    assert torch.equal(first.logits, kept)


@pytest.mark.skipif(not torch.cuda.is_available() or not has_fp8_matmul(torch.device("cuda")),
                    reason="needs FP8 tensor cores (compute capability >= 8.9)")
def test_scaled_mm_path_equals_dequantising_path_on_gpu():
    g = torch.Generator(device="cuda").manual_seed(0)
    w = quantize(torch.randn(512, 256, device="cuda", generator=g))
    x = torch.randn(37, 256, device="cuda", generator=g, dtype=torch.bfloat16)  # M not a multiple of 16
    # same quantised operands; the FP8 GEMM accumulates in float32 and rounds its output to bf16
    reference = dequant_linear(x.float(), w, None)
    torch.testing.assert_close(scaled_mm_linear(x, w, None).float(), reference, rtol=1e-2, atol=1e-2)


def test_fp8_backend_on_gpu_agrees_with_bf16():
    path = _zoo_target()
    bf16 = NativeBackend(path, max_slots=1, device="cuda", dtype=torch.bfloat16)
    fp8 = NativeBackend(path, max_slots=1, device="cuda", dtype=torch.bfloat16, fp8=True, cuda_graphs=True)
    tokens = list(range(10, 200))
    rows = []
    for b in (bf16, fp8):
        b.add("q", tokens[:1])
        (res,) = b.score([ScoreItem("q", tokens[0], Draft(tokens=tokens[1:32]))])
        b.remove("q")
        rows.append(res.logits.float())
    agree = (rows[0].argmax(-1) == rows[1].argmax(-1)).float().mean().item()
    assert agree >= 0.8


def test_greedy_speculation_through_graphs_is_lossless():
    model = tiny_llama(seed=5, dtype=torch.float32)
    backend = NativeBackend(model, max_slots=8, device="cuda", cuda_graphs=True)
    prompts = [[1, 2, 3, 1, 2, 3, 1], [9, 8, 7, 6], [5], [4, 5, 4, 5, 4, 5, 4, 5, 4]]
    params = [SamplingParams(max_new_tokens=24)] * len(prompts)
    done, metrics = anyio.run(run_concurrently, backend, [NgramProposer(min_n=1, max_n=3)], prompts, params, 4)
    assert metrics.totals.drafted > 0 and backend.graphs.replays > 0
    for prompt, completion in zip(prompts, done):
        ref, margins = reference_greedy(model, prompt, 24)
        assert tie_aware_equal(list(completion.token_ids), ref, margins, eps=1e-4)
