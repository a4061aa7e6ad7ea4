"""The native backend's KV slots and batched verification: every request of a batch, chain or tree,
gets what a full forward of its own context gives and what scoring it alone gives; commits keep
exactly the accepted path; capacity is fixed, reported, and a full cache is a typed error."""

from __future__ import annotations

import random

import anyio
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spec_sdk import Draft, EngineFullError, InvalidRequestError, SamplingParams, SpecEngine
from spec_sdk.backends.base import ScoreItem
from spec_sdk.backends.native import NativeBackend
from spec_sdk.backends.native.batch import Row, attention_mask, make_batch, split_head
from spec_sdk.backends.native.cpu import padded_rows
from spec_sdk.verify import verify_batch


@pytest.fixture(scope="module")
def backend(tiny_model):
    return NativeBackend(tiny_model, max_slots=12)


def _full(model, tokens):
    with torch.inference_mode():
        out = model(torch.tensor([list(tokens)]), use_cache=False, output_hidden_states=True)
    return out.logits[0, -1], out.hidden_states[-1][0, -1]


def _path_to(parents, node):
    path = []
    while node != -1:
        path.append(node)
        node = parents[node]
    return path[::-1]


def _random_draft(rng: random.Random, vocab: int, none_share: float = 0.25) -> Draft | None:
    kind = "none" if rng.random() < none_share else rng.choice(["chain", "tree"])
    n = rng.randint(1, 7)
    tokens = [rng.randrange(vocab) for _ in range(n)]
    if kind == "none":
        return None
    if kind == "chain":
        return Draft(tokens=tokens)
    return Draft(tokens=tokens, parents=[rng.randrange(-1, i) for i in range(n)])


def _contexts(seq, draft):
    n = 0 if draft is None else len(draft)
    parents = None if draft is None else (draft.parents or tuple(range(-1, n - 1)))
    return [seq] + [seq + [draft.tokens[j] for j in _path_to(parents, i)] for i in range(n)]


@st.composite
def trees(draw, vocab: int, max_nodes: int = 6) -> Draft:
    n = draw(st.integers(1, max_nodes))
    parents = [draw(st.integers(-1, i - 1)) for i in range(n)]
    return Draft(tokens=draw(st.lists(st.integers(0, vocab - 1), min_size=n, max_size=n)), parents=parents)


@settings(max_examples=40)
@given(
    prompt=st.lists(st.integers(0, 63), min_size=1, max_size=12),
    steps=st.lists(
        st.tuples(st.one_of(st.none(), trees(64)), st.integers(-1, 5), st.integers(0, 63)), min_size=1, max_size=4
    ),
)
def test_tree_logits_and_compacted_cache_match_full_forward(backend, tiny_model, prompt, steps):
    rid = "r"
    backend.add(rid, prompt)
    seq = list(prompt)
    try:
        for draft, pick, next_token in steps:
            (res,) = backend.score([ScoreItem(rid, seq[-1], draft, want_hidden=True)])
            for row, context in enumerate(_contexts(seq, draft)):
                logits, hidden = _full(tiny_model, context)
                torch.testing.assert_close(res.logits[row], logits, rtol=1e-9, atol=1e-9)
                torch.testing.assert_close(res.hidden[row], hidden, rtol=1e-9, atol=1e-9)
            n = 0 if draft is None else len(draft)
            path = _path_to(draft.parents, min(pick, n - 1)) if draft is not None and pick >= 0 else []
            backend.commit(rid, path)
            seq += [draft.tokens[i] for i in path] + [next_token]
            assert backend.cached_length(rid) == len(seq) - 1
        (res,) = backend.score([ScoreItem(rid, seq[-1])])
        torch.testing.assert_close(res.logits[0], _full(tiny_model, seq)[0], rtol=1e-9, atol=1e-9)
        backend.commit(rid, [])
    finally:
        backend.remove(rid)
    assert len(backend) == 0


def _one_long(rng: random.Random, vocab: int, row: int) -> Draft:
    """Four-token drafts, one row's of seven: attention splits after every row's first five nodes."""
    n = 7 if row == 0 else 4
    tokens = [rng.randrange(vocab) for _ in range(n)]
    return Draft(tokens=tokens, parents=[rng.randrange(-1, i) for i in range(n)] if rng.random() < 0.5 else None)


# most rows drafting (one padded pass), few (two passes after the roots), or one long draft among
# equal ones (two passes after the common length)
@pytest.mark.parametrize("none_share", [0.25, 0.8, "one long"])
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("row_step", [None, 8])  # packed forwards padded to a multiple of 8 rows, as on a CPU by 4
def test_batched_verification_equals_verifying_alone(tiny_model, seed, none_share, row_step):
    """>= 8 requests of different lengths with mixed chains, trees and no drafts, over several
    steps with random commits: each request's logits, hidden states and verdict are those it gets
    scored alone, and those of a full forward of its own context."""
    rng = random.Random(seed)
    together = NativeBackend(tiny_model, max_slots=12)
    if row_step is not None:  # (float64 runs F.linear, which needs no padding: asked for here)
        together._rows_for = lambda n: -(-n // row_step) * row_step
    alone = NativeBackend(tiny_model, max_slots=1)
    # Occupy and free a few slots so the batch's slots are not consecutive (the gather path).
    for i in range(seed):
        together.add(f"hole{i}", [1])
    seqs = {f"r{i}": [rng.randrange(64) for _ in range(rng.randint(1, 30))] for i in range(9)}
    for rid, seq in seqs.items():
        together.add(rid, seq)
    for i in range(seed):
        together.remove(f"hole{i}")
    params = SamplingParams()
    for _ in range(3):
        items = [ScoreItem(rid, seq[-1], _one_long(rng, 64, i) if none_share == "one long"
                           else _random_draft(rng, 64, none_share), want_hidden=True)
                 for i, (rid, seq) in enumerate(seqs.items())]
        if none_share == "one long":
            assert split_head([item.num_nodes for item in items], 8) == 5
        rng.shuffle(items)
        batched = together.score(items)
        verdicts = verify_batch([r.logits for r in batched], [i.draft for i in items], [params] * len(items),
                                [None] * len(items))
        for item, res, verdict in zip(items, batched, verdicts):
            seq = seqs[item.request_id]
            alone.add("a", seq)
            (single,) = alone.score([ScoreItem("a", seq[-1], item.draft, want_hidden=True)])
            alone.remove("a")
            torch.testing.assert_close(res.logits, single.logits, rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(res.hidden, single.hidden, rtol=1e-12, atol=1e-12)
            assert verify_batch([single.logits], [item.draft], [params], [None])[0] == verdict
            for row, context in enumerate(_contexts(seq, item.draft)):
                torch.testing.assert_close(res.logits[row], _full(tiny_model, context)[0], rtol=1e-9, atol=1e-9)
            # Commit a random root-to-node path (not only the verdict's) to exercise compaction.
            draft = item.draft
            n = 0 if draft is None else len(draft)
            pick = rng.randrange(-1, n)
            path = [] if pick < 0 else _path_to(draft.parents or tuple(range(-1, n - 1)), pick)
            together.commit(item.request_id, path)
            seq += [draft.tokens[i] for i in path] + [rng.randrange(64)]
            assert together.cached_length(item.request_id) == len(seq) - 1


def test_packing_and_two_pass_attention_follow_the_rows_sizes():
    """Equal rows: one dense pass. Rows of different sizes: matmuls over the real nodes only;
    attention in two passes where that reads much less than padding every row to the longest:
    after the roots when few rows have drafts, after the common length when few are longer."""
    def plan(sizes):
        rows = [Row(i, 3, 1, Draft(tokens=[2] * (n - 1)) if n > 1 else None) for i, n in enumerate(sizes)]
        return make_batch(rows, scratch=99, device=torch.device("cpu"))

    dense = plan([2, 2, 2])
    assert dense.real is None and dense.split is None
    padded = plan([5, 5, 1])
    assert padded.real.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10] and padded.split is None
    two = plan([1, 4, 1, 1, 1, 1])
    assert two.real.tolist() == [0, 4, 5, 6, 7, 8, 12, 16, 20]
    assert two.split.head == 1 and two.split.head_valid is None
    assert two.split.head_gather.tolist() == [0, 1, 5, 6, 7, 8] and two.split.rows.tolist() == [1]
    assert two.split.gather.tolist() == [2, 3, 4] and two.split.dest.tolist() == [2, 3, 4]
    # 16 rows of 5 nodes and one of 9: the first pass takes five nodes of every row, the second
    # the long row's last four
    long = plan([5] * 8 + [9] + [5] * 8)
    split = long.split
    assert split.head == 5 and split.rows.tolist() == [8] and split.head_valid is None
    assert split.head_gather.tolist()[40:45] == [40, 41, 42, 43, 44] and split.dest.tolist() == [45, 46, 47, 48]
    assert split.head_dest.tolist() == [i for i in range(89) if not 45 <= i < 49]
    # shorter rows pad the first pass with their root, and only real nodes are written back
    short = make_batch([Row(i, 3, 1, Draft(tokens=[2] * (n - 1)) if n > 1 else None)
                        for i, n in enumerate([2] + [3] * 15 + [9])], scratch=99, device=torch.device("cpu"))
    split = short.split
    assert split.head == 3 and split.head_gather.tolist()[:3] == [0, 1, 0]
    assert split.head_valid.tolist()[:3] == [0, 1, 3] and split.head_dest.tolist()[:3] == [0, 1, 2]
    assert plan([5] * 8 + [9] * 8).split is None  # half the rows long: padding costs less
    # asked for more rows, a packed batch appends padding nodes (the first rows' unused places)
    more = make_batch([Row(i, 3, 1, Draft(tokens=[2] * (n - 1)) if n > 1 else None) for i, n in enumerate([1, 3])],
                      scratch=99, device=torch.device("cpu"), rows_for=lambda n: n + 2)
    assert more.real.tolist() == [0, 3, 4, 5, 1, 2] and more.nodes == 4
    assert [padded_rows(n) for n in (1, 16, 17, 20, 21)] == [1, 16, 20, 20, 24]
    assert split_head([1] * 12 + [5] * 4, 5) == 1 and split_head([1] * 8 + [5] * 8, 5) == 0


def test_attention_mask_layout():
    anc = torch.zeros(2, 3, 3, dtype=torch.bool)
    anc[0] = torch.tensor([[1, 0, 0], [1, 1, 0], [1, 0, 1]])  # root, two children of the root
    anc[1] = torch.tensor([[1, 0, 0], [1, 0, 0], [1, 0, 0]])  # root alone; rows 1, 2 padding
    mask = attention_mask(torch.tensor([2, 4]), anc, kv_len=7)[:, 0].to(torch.int64).tolist()
    assert mask[0] == [[1, 1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 0, 1, 0, 0]]
    assert mask[1] == [[1, 1, 1, 1, 1, 0, 0]] * 3


def test_capacity_is_fixed_reported_and_typed(tiny_model):
    backend = NativeBackend(tiny_model, max_slots=2, max_len=64)
    mem = backend.memory()
    spec = backend.spec
    per_slot = 2 * spec.num_layers * spec.num_kv_heads * 65 * spec.head_dim * 8  # float64, + scratch
    assert mem["kv_cache_bytes"] == 2 * per_slot and mem["slots"] == 2 and mem["max_len"] == 64
    backend.add("a", [1, 2])
    backend.add("b", [3])
    with pytest.raises(EngineFullError):
        backend.add("c", [4])
    assert backend.memory()["slots_in_use"] == 2
    backend.remove("a")
    backend.add("c", [4])  # the freed slot is reused
    with pytest.raises(InvalidRequestError):
        backend.add("d", list(range(65)))
    backend.remove("b")
    backend.remove("c")
    assert backend.memory()["slots_in_use"] == 0


def test_engine_runs_no_more_requests_than_the_backend_has_slots(tiny_model):
    """max_batch above the backend's slots is capped: the extra requests wait for a free slot
    (admission="wait") or are refused at the door with EngineFullError (admission="reject")."""
    backend = NativeBackend(tiny_model, max_slots=2)

    async def main(admission, max_waiting):
        outcomes = []
        async with SpecEngine(backend, max_batch=4, max_waiting=max_waiting, admission=admission) as engine:
            assert engine.config.max_batch == 2

            async def one(i):
                try:
                    done = await engine.generate([1 + i, 2, 3], SamplingParams(max_new_tokens=4))
                    outcomes.append(len(done.token_ids))
                except EngineFullError:
                    outcomes.append("full")

            async with anyio.create_task_group() as tg:
                for i in range(4):
                    tg.start_soon(one, i)
            # the engine keeps serving
            done = await engine.generate([5, 6], SamplingParams(max_new_tokens=3))
        return outcomes, len(done.token_ids)

    outcomes, last = anyio.run(main, "wait", 8)
    assert outcomes == [4, 4, 4, 4] and last == 3 and len(backend) == 0
    outcomes, last = anyio.run(main, "reject", 0)
    assert sorted(outcomes, key=str) == [4, 4, "full", "full"]
    assert last == 3 and len(backend) == 0


def test_misuse_is_refused(backend):
    backend.add("m", [1, 2, 3])
    try:
        with pytest.raises(InvalidRequestError):
            backend.add("m", [1])
        backend.score([ScoreItem("m", 3, Draft(tokens=[4, 5, 6], parents=[-1, -1, 1]))])
        with pytest.raises(RuntimeError):
            backend.score([ScoreItem("m", 3)])
        for bad in ([2], [0, 2], [1, 0], [3]):
            with pytest.raises(ValueError):
                backend.commit("m", bad)
        backend.commit("m", [1, 2])
        assert backend.cached_length("m") == 5
        with pytest.raises(ValueError):
            backend.commit("m", [])
        with pytest.raises(KeyError):
            backend.score([ScoreItem("nope", 1)])
    finally:
        backend.remove("m")
    with pytest.raises(InvalidRequestError):
        backend.add("e", [])
    with pytest.raises(InvalidRequestError):
        backend.add("e", [64])


def test_cli_bench_and_generate_run_on_the_native_backend(tmp_path, capsys):
    import json

    from spec_sdk.cli import main
    from spec_sdk.zoo.build import default_model_dir

    tiny = str(default_model_dir("tiny"))
    out = tmp_path / "bench.json"
    code = main(["bench", "--backend", "native", "--model", tiny, "--prompts", "benchmarks/prompts/repetitive.jsonl",
                 "--limit", "3", "--max-new-tokens", "16", "--json", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["backend"] == "native"
    assert report["methods"]["ngram k=4"]["all_outputs_equal"]
    assert main(["generate", "def add(a, b):", "--backend", "native", "--model", tiny, "--max-new-tokens", "8"]) == 0
    assert "MAL" in capsys.readouterr().err


def test_gpu_only_paths_import_and_refuse_the_cpu(tiny_model):
    from spec_sdk.backends.native import graphs
    from spec_sdk.backends.native.fp8 import has_fp8_matmul

    assert graphs.GraphRunner is not None and not has_fp8_matmul(torch.device("cpu"))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            NativeBackend(tiny_model, max_slots=1, cuda_graphs=True)
