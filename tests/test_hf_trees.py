"""Draft trees end to end: the hf backend scores a tree in one forward exactly as full forwards
would, compacts its KV cache to an accepted path, and the engine stays lossless with tree drafts
(greedy on the tiny Llama, sampled on a table target)."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Callable, Sequence

import anyio
import attrs
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spec_sdk import Draft, HFBackend, SamplingParams
from spec_sdk.backends.base import ScoreItem
from spec_sdk.backends.hf import tree_mask
from spec_sdk.proposers.base import RequestView
from spec_sdk.testing import (
    RecordingProposer,
    SampledRandomProposer,
    TableTarget,
    chi_square,
    exact_sequence_distribution,
    greedy_next_fn,
    reference_greedy,
    run_concurrently,
    tie_aware_equal,
    tiny_llama,
)
from spec_sdk.testing.strategies import prompts


@pytest.fixture(scope="module")
def backend(tiny_model):
    backend = HFBackend(tiny_model)
    assert backend.supports_trees
    return backend


def _full_forward(model, tokens: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Last position's logits and hidden state, no cache: the plain way."""
    with torch.inference_mode():
        out = model(torch.tensor([list(tokens)]), use_cache=False, output_hidden_states=True)
    return out.logits[0, -1], out.hidden_states[-1][0, -1]


def _path_to(parents: Sequence[int], node: int) -> list[int]:
    path = []
    while node != -1:
        path.append(node)
        node = parents[node]
    return path[::-1]


@st.composite
def trees(draw: st.DrawFn, vocab: int, max_nodes: int = 6) -> Draft:
    """Any shape (chains included), tokens arbitrary (duplicate siblings included)."""
    n = draw(st.integers(1, max_nodes))
    parents = [draw(st.integers(-1, i - 1)) for i in range(n)]
    return Draft(tokens=draw(st.lists(st.integers(0, vocab - 1), min_size=n, max_size=n)), parents=parents)


# --- the backend: tree scoring and cache compaction ----------------------------------------------


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
            n = 0 if draft is None else len(draft)
            assert res.logits.shape[0] == 1 + n
            contexts = [seq] + [
                seq + [draft.tokens[j] for j in _path_to(draft.parents, i)] for i in range(n)  # type: ignore[union-attr]
            ]
            for row, context in enumerate(contexts):
                logits, hidden = _full_forward(tiny_model, context)
                torch.testing.assert_close(res.logits[row], logits, rtol=1e-9, atol=1e-9)
                torch.testing.assert_close(res.hidden[row], hidden, rtol=1e-9, atol=1e-9)
            # Accept the path to a random node (or nothing), then any next token: the next score's
            # logits are checked against a full forward of the new context, so a wrongly compacted
            # cache shows up there.
            path = _path_to(draft.parents, min(pick, n - 1)) if draft is not None and pick >= 0 else []
            backend.commit(rid, path)
            seq += [draft.tokens[i] for i in path] + [next_token]  # type: ignore[union-attr]
            assert backend.cached_length(rid) == len(seq) - 1
        (res,) = backend.score([ScoreItem(rid, seq[-1])])
        torch.testing.assert_close(res.logits[0], _full_forward(tiny_model, seq)[0], rtol=1e-9, atol=1e-9)
        backend.commit(rid, [])
    finally:
        backend.remove(rid)
    assert len(backend) == 0


def test_tree_mask_layout() -> None:
    mask = tree_mask([-1, 0, -1, 1], past=3, dtype=torch.float32)
    assert mask.shape == (1, 1, 5, 8) and mask.dtype == torch.float32
    sees = (mask[0, 0] == 0).to(torch.int64).tolist()
    assert sees == [
        [1, 1, 1, 1, 0, 0, 0, 0],  # root: the past and itself
        [1, 1, 1, 1, 1, 0, 0, 0],  # node 0: + itself
        [1, 1, 1, 1, 1, 1, 0, 0],  # node 1 under 0
        [1, 1, 1, 1, 0, 0, 1, 0],  # node 2 under the root: not node 0 or 1
        [1, 1, 1, 1, 1, 1, 0, 1],  # node 3 under 1 under 0
    ]
    assert float(mask.min()) == torch.finfo(torch.float32).min


def test_eager_attention_scores_trees_too() -> None:
    model = tiny_llama(seed=1)
    model.set_attn_implementation("eager")
    backend = HFBackend(model)
    assert backend.supports_trees
    prompt = [5, 9, 2, 7]
    draft = Draft(tokens=[1, 3, 3, 8], parents=[-1, -1, 0, 2])
    backend.add("e", prompt)
    (res,) = backend.score([ScoreItem("e", prompt[-1], draft)])
    for i in range(len(draft)):
        context = prompt + [draft.tokens[j] for j in _path_to(draft.parents, i)]  # type: ignore[arg-type]
        # eager takes its softmax in float32, whatever the model's dtype
        # (float32 softmax: ~1e-6 of noise, which kernels differ in; a wrong mask is off by ~1e-1)
        torch.testing.assert_close(res.logits[1 + i], _full_forward(model, context)[0], rtol=1e-5, atol=1e-5)
    backend.commit("e", [1])


def test_models_that_cannot_take_a_tree_mask_fall_back_to_chains() -> None:
    from transformers import MistralConfig, MistralForCausalLM

    config = MistralConfig(
        vocab_size=32, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
        num_key_value_heads=1, sliding_window=4,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        sliding = MistralForCausalLM(config).eval()
    backend = HFBackend(sliding)
    assert not backend.supports_trees  # a sliding-window cache needs its own mask per layer
    with pytest.raises(ValueError):
        HFBackend(sliding, trees=True)
    backend.add("s", [1, 2, 3])
    with pytest.raises(NotImplementedError):
        backend.score([ScoreItem("s", 3, Draft(tokens=[1, 2], parents=[-1, -1]))])
    backend.remove("s")


def test_chains_can_be_forced(tiny_model) -> None:
    assert not HFBackend(tiny_model, trees=False).supports_trees


def test_bad_tree_paths_are_refused(backend) -> None:
    backend.add("b", [4, 5])
    try:
        backend.score([ScoreItem("b", 5, Draft(tokens=[1, 2, 3], parents=[-1, -1, 1]))])
        for bad in ([2], [0, 2], [1, 0], [3]):  # not from the root, a non-child, out of range
            with pytest.raises(ValueError):
                backend.commit("b", bad)
        backend.commit("b", [1, 2])
        assert backend.cached_length("b") == 4
        with pytest.raises(ValueError):
            backend.commit("b", [])  # nothing scored
    finally:
        backend.remove("b")


# --- the engine with tree drafts ----------------------------------------------------------------


class TreeOracleProposer(RecordingProposer):
    """Hides the target's greedy continuation on a random branch of each level, among wrong
    siblings (some with wrong subtrees, some duplicated), so the first chain is usually wrong
    and only a real tree verification accepts the right tokens. Deterministic in (seed,
    request, position). `right_nodes` counts the right tokens it has drafted."""

    name = "tree_oracle"

    def __init__(self, next_token: Callable[[Sequence[int]], int], vocab_size: int, seed: int = 0) -> None:
        super().__init__()
        self.next_token = next_token
        self.vocab_size = vocab_size
        self.seed = seed
        self.right_nodes = 0

    def _draft(self, req: RequestView, budget: int) -> Draft | None:
        rng = random.Random(f"{self.seed}:{req.id}:{len(req.tokens)}")
        context = list(req.tokens[:])
        tokens: list[int] = []
        parents: list[int] = []

        def add(token: int, parent: int) -> int:
            tokens.append(token)
            parents.append(parent)
            return len(tokens) - 1

        parent = -1
        while len(tokens) < budget:
            right = int(self.next_token(context))
            width = rng.randint(1, 3)
            slot = rng.randrange(width)
            wrong = (right + 1 + rng.randrange(self.vocab_size - 1)) % self.vocab_size
            below = -1
            for s in range(width):
                if len(tokens) >= budget:
                    break
                if s == slot:
                    below = add(right, parent)
                    self.right_nodes += 1
                    continue
                node = add(wrong, parent)  # the same wrong token for every wrong sibling: duplicates
                if rng.random() < 0.4 and len(tokens) < budget:
                    add(rng.randrange(self.vocab_size), node)  # a wrong subtree
            if below == -1:
                break
            parent = below
            context.append(right)
        return Draft(tokens=tokens, parents=parents, score=float(len(tokens)), source=self.name)


@pytest.mark.parametrize("trees_on", [True, False])
def test_greedy_with_tree_drafts_equals_target_only(tiny_model, trees_on):
    backend = HFBackend(tiny_model, trees=trees_on)
    vocab = backend.vocab_size
    seen = {"cases": 0, "right": 0, "accepted": 0}

    @settings(max_examples=25)
    @given(
        batch=st.lists(prompts(vocab, max_len=20), min_size=1, max_size=4),
        n_new=st.integers(1, 16),
        k=st.integers(1, 8),
        seed=st.integers(0, 1000),
    )
    def case(batch, n_new, k, seed):
        proposer = TreeOracleProposer(greedy_next_fn(tiny_model), vocab, seed=seed)
        params = [SamplingParams(max_new_tokens=n_new)] * len(batch)
        done, metrics = anyio.run(run_concurrently, backend, [proposer], batch, params, k)
        for prompt, completion in zip(batch, done, strict=True):
            ref, margins = reference_greedy(tiny_model, prompt, n_new)
            assert tie_aware_equal(list(completion.token_ids), ref, margins), (prompt, completion.token_ids, ref)
        assert proposer.protocol_errors == []
        assert len(backend) == 0
        seen["cases"] += 1
        seen["right"] += proposer.right_nodes
        seen["accepted"] += metrics.totals.accepted

    case()
    assert seen["cases"] >= 25 and seen["right"] > 0
    if trees_on:
        # Trees verified whole: every right token drafted is accepted, wherever it hid.
        assert seen["accepted"] == seen["right"]
    else:
        # First chain only: the right branch is often cut off.
        assert 0 < seen["accepted"] < seen["right"]


@given(prompt=prompts(6, max_len=10), n_new=st.integers(1, 20), order=st.sampled_from([1, 2]), seed=st.integers(0, 99))
@settings(max_examples=30)
def test_greedy_tree_drafts_keep_the_table_targets_kv_convention(prompt, n_new, order, seed):
    """TableTarget raises on any commit that is not a root-to-node path of the scored tree."""
    target = TableTarget(vocab_size=6, order=order, seed=len(prompt))
    proposer = TreeOracleProposer(greedy_next_fn(target), 6, seed=seed)
    (done,), metrics = anyio.run(run_concurrently, target, [proposer], [prompt], [SamplingParams(max_new_tokens=n_new)], 5)
    assert list(done.token_ids) == reference_greedy(target, prompt, n_new)[0]
    assert metrics.totals.accepted == proposer.right_nodes
    assert not target.active_requests


# --- sampling with trees: whole output sequences follow the target ------------------------------


class RandomTreeProposer(RecordingProposer):
    """Deterministic random trees (probs=None): random shapes, random tokens, duplicates common
    with a small vocabulary. Keyed by (seed, request, position)."""

    name = "random_tree"

    def __init__(self, vocab_size: int, seed: int = 0) -> None:
        super().__init__()
        self.vocab_size = vocab_size
        self.seed = seed

    def _draft(self, req: RequestView, budget: int) -> Draft | None:
        rng = random.Random(f"{self.seed}:{req.id}:{len(req.tokens)}")
        n = rng.randint(1, budget)
        parents = [rng.randrange(-1, i) for i in range(n)]
        tokens = [rng.randrange(self.vocab_size) for _ in range(n)]
        return Draft(tokens=tokens, parents=parents, score=float(n), source=self.name)


class TopTreeProposer(RecordingProposer):
    """The target's most likely next tokens as siblings under the root, most likely first (a
    top-k expansion, as model proposers build trees). A sibling-rejection bug bites hardest here:
    the first sibling holds most of the mass, so what is left for the others is far from p."""

    name = "top_tree"

    def __init__(self, target: TableTarget) -> None:
        super().__init__()
        self.target = target

    def _draft(self, req: RequestView, budget: int) -> Draft | None:
        p = self.target.next_distribution(list(req.tokens[:]))
        tokens = torch.argsort(p, descending=True, stable=True)[:budget].tolist()
        return Draft(tokens=tokens, parents=[-1] * len(tokens), score=1.0, source=self.name)


class SampledTreeProposer(SampledRandomProposer):
    """A first chain drawn from fresh q rows (as SampledRandomProposer draws), plus adversarial
    extra branches whose tokens were NOT drawn from the probs rows they claim. Sampling verifies
    such a tree by its first chain only, so the lie must not matter."""

    name = "sampled_tree"

    def _draft(self, req: RequestView, budget: int) -> Draft | None:
        chain = super()._draft(req, max(1, budget - 2))
        if chain is None or chain.probs is None:
            return chain
        c = len(chain)
        parents = list(range(-1, c - 1))
        tokens = list(chain.tokens)
        rows = list(chain.probs)
        rng = random.Random(f"{req.id}:{len(req.tokens)}")
        for i in range(c, budget):
            # Anywhere but under the chain's last node, where it would extend the first chain.
            parents.append(rng.choice([p for p in range(-1, i) if p != c - 1]))
            tokens.append(rng.randrange(self.vocab_size))
            rows.append(self.random_q())
        return Draft(tokens=tokens, parents=parents, probs=torch.stack(rows), score=chain.score, source=self.name)


N = 3000
PROMPT = [1, 2, 3]
TREE_PROPOSERS = {
    "random-tree": lambda t: RandomTreeProposer(t.vocab_size, seed=5),
    "top-tree": TopTreeProposer,
    "sampled-tree": lambda t: SampledTreeProposer(t.vocab_size, seed=5),
}
PARAMS = {
    "t=1": SamplingParams(temperature=1.0, max_new_tokens=3),
    "t=0.8,top_k=3,top_p=0.9": SamplingParams(temperature=0.8, top_k=3, top_p=0.9, max_new_tokens=3),
}


def _sample(target, proposer, params, k=4):
    all_params = [attrs.evolve(params, seed=i) for i in range(N)]
    done, metrics = anyio.run(run_concurrently, target, [proposer], [PROMPT] * N, all_params, k)
    return Counter(tuple(c.token_ids) for c in done), metrics


@pytest.mark.parametrize("kind", sorted(TREE_PROPOSERS))
@pytest.mark.parametrize("pname", sorted(PARAMS))
@pytest.mark.parametrize("concentration", [0.5, 3.0])
def test_sampled_sequences_with_trees_follow_target_distribution(kind, pname, concentration):
    target = TableTarget(vocab_size=5, order=2, seed=3, concentration=concentration)
    params = PARAMS[pname]
    exact = exact_sequence_distribution(target, PROMPT, params.max_new_tokens, params)
    proposer = TREE_PROPOSERS[kind](target)
    counts, metrics = _sample(target, proposer, params)
    stat, dof, p = chi_square(counts, exact, N)
    assert metrics.totals.accepted > 0 and proposer.protocol_errors == []
    assert p > 1e-4, f"chi2={stat:.1f} dof={dof} p={p:.2e}"
    assert not target.active_requests


def test_chi_square_catches_a_tree_sampler_that_keeps_rejected_mass(monkeypatch):
    """Power check: test every sibling against the original p, and the same test must fail."""
    from spec_sdk.verify import tree

    real = tree.sibling_acceptance
    monkeypatch.setattr(tree, "sibling_acceptance", lambda p, tokens, removed: real(p, tokens, torch.zeros_like(removed)))
    target = TableTarget(vocab_size=5, order=2, seed=3)
    params = PARAMS["t=1"]
    exact = exact_sequence_distribution(target, PROMPT, params.max_new_tokens, params)
    counts, _ = _sample(target, TopTreeProposer(target), params)
    assert chi_square(counts, exact, N)[2] < 1e-6
