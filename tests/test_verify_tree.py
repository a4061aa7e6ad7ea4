"""Sampled tree verification is lossless: exact output distributions by enumeration (first token
and first two tokens) over hypothesis-drawn targets, trees and SamplingParams; the sampler's
wiring with chosen uniforms; chi-square on its random path; power checks that wrong variants fail.

The target in these tests is a real model: an arbitrary function from the whole context to a
logits row, drawn lazily by hypothesis. A tree's row for node i is the target's row after
context + the tokens from the root down to i, so duplicate siblings share a row and "the row after
y0" is the row of the root's child with token y0 whenever there is one, as in a real forward.
"""

from __future__ import annotations

import itertools
from collections import Counter
from typing import Callable, Iterator, Sequence

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from spec_sdk.types import Draft, SamplingParams, Verdict
from spec_sdk.verify import acceptance_probs, make_generator, residual, sample_with_uniforms, verify, verify_batch
from spec_sdk.verify import keyed
from spec_sdk.verify import tree as tree_mod
from spec_sdk.verify import warp_probs
from spec_sdk.verify.tree import first_chain_nodes, sibling_acceptance, sibling_residual

SETTINGS = settings(max_examples=max(150, settings.default.max_examples), deadline=None)
HEAVY_SETTINGS = settings(max_examples=max(80, settings.default.max_examples), deadline=None)
GREEDY = SamplingParams(temperature=0.0)

Row = Callable[[tuple[int, ...]], torch.Tensor]


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """Tiny tensors on a busy machine: intra-op threads only wait on each other."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- strategies -------------------------------------------------------------------------------


def context_target(data: st.DataObject, vocab: int) -> Row:
    """A target model: context -> logits row, each new context's row drawn when first asked for
    (often tie-prone small integers, so equal probabilities and top-k/top-p ties come up)."""
    rows: dict[tuple[int, ...], torch.Tensor] = {}
    tie_prone = data.draw(st.booleans())
    value = st.integers(0, 3).map(float) if tie_prone else st.floats(-5.0, 5.0, allow_nan=False)

    def row(context: tuple[int, ...]) -> torch.Tensor:
        if context not in rows:
            rows[context] = torch.tensor(data.draw(st.lists(value, min_size=vocab, max_size=vocab)), dtype=torch.float64)
        return rows[context]

    return row


@st.composite
def sampling_params(draw: st.DrawFn, vocab: int) -> SamplingParams:
    return SamplingParams(
        temperature=draw(st.floats(0.05, 3.0)),
        top_k=draw(st.integers(0, vocab + 1)),
        top_p=draw(st.one_of(st.floats(0.0, 1.0, exclude_min=True), st.just(1.0))),
        min_p=draw(st.one_of(st.floats(0.0, 1.0, exclude_max=True), st.just(0.0))),
    )


@st.composite
def trees(draw: st.DrawFn, vocab: int, max_nodes: int = 7) -> Draft:
    """Random parents (each node under the root or any earlier node), arbitrary tokens: duplicate
    siblings are common with a small vocabulary. Never a chain, so the tree sampler runs."""
    n = draw(st.integers(2, max_nodes))
    parents = [-1] + [draw(st.integers(-1, i - 1)) for i in range(1, n)]
    if all(p == i - 1 for i, p in enumerate(parents)):
        parents[-1] = -1
    tokens = [draw(st.integers(0, vocab - 1)) for _ in range(n)]
    return Draft(tokens=tokens, parents=parents)


def path_to(draft: Draft, node: int) -> list[int]:
    assert draft.parents is not None
    path = []
    while node != -1:
        path.append(node)
        node = draft.parents[node]
    return path[::-1]


def tree_logits(row: Row, context: tuple[int, ...], draft: Draft) -> torch.Tensor:
    """What a forward over the tree returns: the root's row, then each node's after its path."""
    rows = [row(context)]
    rows += [row(context + tuple(draft.tokens[j] for j in path_to(draft, i))) for i in range(len(draft))]
    return torch.stack(rows)


def children(draft: Draft) -> dict[int, list[int]]:
    assert draft.parents is not None
    out: dict[int, list[int]] = {}
    for node, parent in enumerate(draft.parents):
        out.setdefault(parent, []).append(node)
    return out


# --- the exact distribution, enumerated with the sampler's own functions ----------------------


Accept = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
Resid = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def tree_output(
    p: torch.Tensor,
    draft: Draft,
    after_root: Callable[[int], torch.Tensor],
    length: int,
    accept: Accept = sibling_acceptance,
    resid: Resid = sibling_residual,
) -> torch.Tensor:
    """Exact distribution `[V] * length` of the first `length` (1 or 2) emitted tokens.

    At node v the children are tried in order; child c passes with probability `accept` (its
    earlier siblings' tokens removed) and the walk continues in c; if all fail, one token comes
    from `resid` of v. A second token after an emission at the root comes from the next step,
    whose first token is `after_root(y0)` (the first-token theorem, proved by the same test).
    """
    vocab = p.shape[1]
    kids = children(draft)

    def dist(node: int, left: int) -> torch.Tensor:
        out = torch.zeros([vocab] * left, dtype=torch.float64)
        reach = torch.tensor(1.0, dtype=torch.float64)
        removed = torch.zeros(vocab, dtype=torch.bool)
        for c in kids.get(node, []):
            token = draft.tokens[c]
            a = accept(p[node + 1][None], torch.tensor([token]), removed[None])[0]
            assert 0.0 <= float(a) <= 1.0
            out[token] += reach * a * (dist(c, left - 1) if left > 1 else 1.0)
            reach = reach * (1 - a)
            removed[token] = True
        r = resid(p[node + 1][None], removed[None])[0]
        if left == 1:
            return out + reach * r
        assert node == -1, "a second token after an emission below the root needs a third row"
        return out + reach * torch.stack([r[y] * after_root(y) for y in range(vocab)])

    # An emission at depth >= 1 already ends two tokens in, so only the root needs after_root.
    return dist(-1, length)


def exact_case(
    data: st.DataObject,
) -> tuple[int, Row, tuple[int, ...], SamplingParams, Draft, torch.Tensor, torch.Tensor]:
    vocab = data.draw(st.integers(2, 5), label="vocab")
    row = context_target(data, vocab)
    context = tuple(data.draw(st.lists(st.integers(0, vocab - 1), min_size=1, max_size=3), label="context"))
    params = data.draw(sampling_params(vocab), label="params")
    draft = data.draw(trees(vocab), label="tree")
    logits = tree_logits(row, context, draft)
    return vocab, row, context, params, draft, logits, warp_probs(logits, params)


@SETTINGS
@given(data=st.data())
def test_first_token_is_exactly_the_target(data: st.DataObject) -> None:
    vocab, row, context, params, draft, logits, p = exact_case(data)
    got = tree_output(p, draft, lambda y: torch.zeros(vocab), 1)
    torch.testing.assert_close(got, p[0], atol=1e-9, rtol=0)


@SETTINGS
@given(data=st.data())
def test_first_two_tokens_are_exactly_the_target(data: st.DataObject) -> None:
    vocab, row, context, params, draft, logits, p = exact_case(data)

    def target_after(y: int) -> torch.Tensor:  # the warped target row after context + y
        return warp_probs(row(context + (y,))[None], params)[0]

    got = tree_output(p, draft, target_after, 2)
    expected = torch.stack([p[0, y] * target_after(y) for y in range(vocab)])
    torch.testing.assert_close(got, expected, atol=1e-9, rtol=0)


def test_duplicate_siblings_are_skipped() -> None:
    p = torch.tensor([[0.5, 0.3, 0.2]], dtype=torch.float64)
    removed = torch.tensor([[False, True, False]])
    # Token 1 was an earlier sibling: its residual mass is 0, so a duplicate never passes.
    assert sibling_acceptance(p, torch.tensor([1]), removed).tolist() == [0.0]
    torch.testing.assert_close(sibling_acceptance(p, torch.tensor([0]), removed), torch.tensor([0.5 / 0.7], dtype=torch.float64))
    torch.testing.assert_close(sibling_residual(p, removed)[0], torch.tensor([5 / 7, 0.0, 2 / 7], dtype=torch.float64))
    # All mass removed (only rounding can get here): fall back to p rather than divide by zero.
    torch.testing.assert_close(sibling_residual(p, torch.ones(1, 3, dtype=torch.bool)), p)
    # With one-hot q the tree functions are the chain's: one child is a one-token chain.
    one_hot = torch.tensor([[0.0, 1.0, 0.0]], dtype=torch.float64)
    nothing = torch.zeros(1, 3, dtype=torch.bool)
    assert sibling_acceptance(p, torch.tensor([1]), nothing).tolist() == acceptance_probs(p, None, torch.tensor([1])).tolist()
    torch.testing.assert_close(sibling_residual(p, removed), residual(p, one_hot))


# --- power: deliberately wrong variants are caught ----------------------------------------------


def _no_mass_removed(p_parents: torch.Tensor, tokens: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    """Wrong: test every sibling against the original p (rejected siblings keep their mass)."""
    return sibling_acceptance(p_parents, tokens, torch.zeros_like(removed))


def _plain_p_after_rejection(p_rows: torch.Tensor, removed: torch.Tensor) -> torch.Tensor:
    """Wrong: emit from p after all children were rejected, rejected tokens included."""
    return p_rows


POWER_LOGITS = torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 0.5], [1.0, 0.0, 0.0], [0.3, 0.3, 0.3]], dtype=torch.float64)
POWER_TREE = Draft(tokens=[0, 1, 2], parents=[-1, -1, 0])  # two siblings at the root
POWER_PARAMS = SamplingParams(temperature=1.0)


@pytest.mark.parametrize("variant", ["accept", "residual"])
def test_exact_enumeration_catches_wrong_variants(variant: str) -> None:
    p = warp_probs(POWER_LOGITS, POWER_PARAMS)
    right = tree_output(p, POWER_TREE, lambda y: torch.zeros(3), 1)
    torch.testing.assert_close(right, p[0], atol=1e-12, rtol=0)
    if variant == "accept":
        wrong = tree_output(p, POWER_TREE, lambda y: torch.zeros(3), 1, accept=_no_mass_removed)
    else:
        wrong = tree_output(p, POWER_TREE, lambda y: torch.zeros(3), 1, resid=_plain_p_after_rejection)
    assert (wrong - p[0]).abs().max() > 0.05


def _chi_square_p(observed: Sequence[int] | torch.Tensor, expected_probs: torch.Tensor) -> float:
    observed = torch.as_tensor(observed, dtype=torch.float64)
    support = expected_probs > 0
    if observed[~support].sum() > 0:
        return 0.0  # drew a token the target cannot produce
    expected = expected_probs[support] / expected_probs[support].sum() * observed.sum()
    return float(chisquare(observed[support].numpy(), expected.numpy()).pvalue)


def _first_tokens(logits: torch.Tensor, draft: Draft, params: SamplingParams, count: int, seed: int) -> torch.Tensor:
    g = make_generator(seed)
    verdicts = verify_batch([logits] * count, [draft] * count, [params] * count, [g] * count)
    return torch.bincount(torch.tensor([v.tokens[0] for v in verdicts]), minlength=logits.shape[1])


@pytest.mark.parametrize("variant", ["accept", "residual"])
def test_chi_square_catches_wrong_variants(monkeypatch: pytest.MonkeyPatch, variant: str) -> None:
    p = warp_probs(POWER_LOGITS, POWER_PARAMS)
    assert _chi_square_p(_first_tokens(POWER_LOGITS, POWER_TREE, POWER_PARAMS, 20_000, 5), p[0]) > 1e-4
    if variant == "accept":
        monkeypatch.setattr(tree_mod, "sibling_acceptance", _no_mass_removed)
    else:
        monkeypatch.setattr(tree_mod, "sibling_residual", _plain_p_after_rejection)
    assert _chi_square_p(_first_tokens(POWER_LOGITS, POWER_TREE, POWER_PARAMS, 20_000, 5), p[0]) < 1e-6


# --- the sampler's random path uses exactly those functions -------------------------------------


def predicted_verdict(p: torch.Tensor, draft: Draft, u: torch.Tensor) -> Verdict:
    """The sequential procedure, written out: node c's test uses u[c], the emission u[n]."""
    kids = children(draft)
    vocab = p.shape[1]
    path: list[int] = []
    node = -1
    while True:
        removed = torch.zeros(vocab, dtype=torch.bool)
        for c in kids.get(node, []):
            a = sibling_acceptance(p[node + 1][None], torch.tensor([draft.tokens[c]]), removed[None])[0]
            if u[c] < a:
                break
            removed[draft.tokens[c]] = True
        else:
            emit = sibling_residual(p[node + 1][None], removed[None])
            extra = int(sample_with_uniforms(emit, u[len(draft) :])[0])
            return Verdict(path=path, tokens=[draft.tokens[i] for i in path] + [extra])
        path.append(c)
        node = c


@HEAVY_SETTINGS
@given(data=st.data())
def test_sampler_wiring_with_chosen_uniforms(data: st.DataObject) -> None:
    vocab, row, context, params, draft, logits, p = exact_case(data)
    n = len(draft)
    # Uniforms near the acceptance thresholds as well as anywhere.
    u = torch.tensor(
        data.draw(st.lists(st.floats(0.0, 1.0, exclude_max=True), min_size=n + 1, max_size=n + 1)), dtype=torch.float64
    )
    if not data.draw(st.booleans()):  # a generator: a uniform per node, then the emission's
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(keyed, "uniforms", lambda generator, count: u[:count].clone())
            verdict = verify(logits, draft, params, None)
        assert verdict == predicted_verdict(p, draft, u)
        return
    # keyed draws (the engine's): node i's test by (its position, TREE + its rank among its
    # siblings), the emission by the position where the path ends
    unit = st.floats(0.0, 1.0, exclude_max=True)
    start = data.draw(st.integers(0, 1000))
    assert draft.parents is not None
    depth, rank, seen = [0] * n, [0] * n, Counter[int]()
    for i, parent in enumerate(draft.parents):
        depth[i] = 1 + (depth[parent] if parent >= 0 else 0)
        rank[i], seen[parent] = seen[parent], seen[parent] + 1
    table = {(start + depth[i] - 1, keyed.TREE + rank[i]): float(u[i]) for i in range(n)}
    table.update({(start + d, keyed.EMIT): data.draw(unit) for d in range(n + 1)})
    node_u = [table[(start + depth[i] - 1, keyed.TREE + rank[i])] for i in range(n)]  # shared keys: one value
    ended = len(predicted_verdict(p, draft, torch.tensor([*node_u, 0.0], dtype=torch.float64)).path)
    expected = predicted_verdict(p, draft, torch.tensor([*node_u, table[(start + ended, keyed.EMIT)]], dtype=torch.float64))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(keyed, "keyed_uniform", lambda seed, position, purpose: table[(position, purpose)])
        verdict = verify(logits, draft, params, keyed.Keyed(keyed.DrawBook(3), start, []))
    assert verdict == expected


def test_sampled_tree_matches_target_empirically() -> None:
    """The random path: first token ~ p_root, and the whole verdict follows its enumerated law."""
    count = 30_000
    logits = torch.tensor(
        [[1.0, 0.2, -0.5, 2.0], [0.0, 1.5, 0.5, -1.0], [-0.2, 0.0, 1.0, 0.4], [0.3, 0.3, 1.0, 0.0], [0.5, -1.0, 0.0, 1.0]],
        dtype=torch.float64,
    )
    draft = Draft(tokens=[3, 3, 0, 1], parents=[-1, -1, -1, 0])  # a duplicate sibling at the root
    params = SamplingParams(temperature=1.1, top_k=3)
    p = warp_probs(logits, params)
    g = make_generator(2025)
    verdicts = verify_batch([logits] * count, [draft] * count, [params] * count, [g] * count)
    assert _chi_square_p(torch.bincount(torch.tensor([v.tokens[0] for v in verdicts]), minlength=4), p[0]) > 1e-4
    assert all(1 not in v.path for v in verdicts)  # the duplicate is never taken

    # The law of (path, tokens), enumerated: node 0 (token 3) passes w.p. p0(3); else node 2 (token
    # 0) against the residual; below node 0, node 3 (token 1) against p_node0.
    a0 = float(p[0, 3])
    a2 = float(p[0, 0]) / (1 - a0)
    a3 = float(p[1, 1])
    law: dict[tuple[tuple[int, ...], tuple[int, ...]], float] = {}
    for y in range(4):
        law[((), (y,))] = (1 - a0) * (1 - a2) * float(sibling_residual(p[0][None], _mask([3, 0]))[0, y])
        law[((0,), (3, y))] = a0 * (1 - a3) * float(sibling_residual(p[1][None], _mask([1]))[0, y])
        law[((0, 3), (3, 1, y))] = a0 * a3 * float(p[4, y])
        law[((2,), (0, y))] = (1 - a0) * a2 * float(p[3, y])
    keys = sorted(k for k, v in law.items() if v > 0)
    seen = Counter((v.path, v.tokens) for v in verdicts)
    assert sum(seen.values()) == sum(seen[k] for k in keys), "a verdict the law gives probability 0"
    assert _chi_square_p([seen[k] for k in keys], torch.tensor([law[k] for k in keys], dtype=torch.float64)) > 1e-4


def _mask(tokens: list[int], vocab: int = 4) -> torch.Tensor:
    m = torch.zeros(1, vocab, dtype=torch.bool)
    m[0, tokens] = True
    return m


@pytest.mark.parametrize("n", [2, 5])
def test_generator_advances_the_same_whatever_is_accepted(n: int) -> None:
    logits = torch.randn(1 + n, 6, generator=torch.Generator().manual_seed(n))
    draft = Draft(tokens=[i % 6 for i in range(n)], parents=[-1] * n)
    reference = make_generator(9)
    torch.rand(n + 1, generator=reference, dtype=torch.float64)
    for params in (SamplingParams(temperature=1.0), SamplingParams(temperature=0.05)):
        g = make_generator(9)
        verify(logits, draft, params, g)
        assert torch.equal(g.get_state(), reference.get_state())


# --- trees with a draft distribution: verified as their first chain -----------------------------


@st.composite
def distributions(draw: st.DrawFn, vocab: int) -> torch.Tensor:
    weights = draw(
        st.lists(st.one_of(st.just(0.0), st.floats(0.01, 1.0)), min_size=vocab, max_size=vocab).filter(lambda w: sum(w) > 0)
    )
    q = torch.tensor(weights, dtype=torch.float64)
    return q / q.sum()


@st.composite
def probs_tree_around(draw: st.DrawFn, vocab: int, chain: Sequence[int], q: Sequence[torch.Tensor]) -> Draft:
    """A tree whose first chain is `chain` (tokens) with draft rows `q`, with arbitrary other
    branches (any tokens, any rows), interleaved in index order."""
    n_other = draw(st.integers(1, 4))
    # The chain's first node comes first: nothing may sit under the root before it.
    order = ["c"] + draw(st.permutations(["c"] * (len(chain) - 1) + ["o"] * n_other))
    parents: list[int] = []
    tokens: list[int] = []
    rows: list[torch.Tensor] = []
    chain_nodes: list[int] = []
    for kind in order:
        i = len(tokens)
        if kind == "c":
            depth = len(chain_nodes)
            parents.append(chain_nodes[-1] if chain_nodes else -1)
            tokens.append(chain[depth])
            rows.append(q[depth])
            chain_nodes.append(i)
        else:
            # Under the root or any earlier node except the chain's current end: a child placed
            # there now would be its first child and extend the first chain.
            options = [c for c in range(-1, i) if c != chain_nodes[-1]]
            parents.append(draw(st.sampled_from(options)))
            tokens.append(draw(st.integers(0, vocab - 1)))
            rows.append(draw(distributions(vocab)))
    draft = Draft(tokens=tokens, parents=parents, probs=torch.stack(rows))
    assert [draft.tokens[i] for i in first_chain_nodes(draft)] == list(chain)
    return draft


@HEAVY_SETTINGS
@given(data=st.data())
def test_probs_tree_two_tokens_are_exactly_the_target(data: st.DataObject) -> None:
    """Draft process: x0 ~ q0, x1 ~ q1(. | x0) form the first chain, everything else in the tree is
    adversarial (chosen after seeing x0, x1). Enumerate the draws and the acceptance events with
    the chain sampler's functions on the rows the first chain selects."""
    vocab = data.draw(st.integers(2, 4))
    row = context_target(data, vocab)
    context = tuple(data.draw(st.lists(st.integers(0, vocab - 1), min_size=1, max_size=2)))
    params = data.draw(sampling_params(vocab))
    q0 = data.draw(distributions(vocab))
    q1 = [data.draw(distributions(vocab)) for _ in range(vocab)]  # q1 may depend on x0

    def target_after(ctx: tuple[int, ...]) -> torch.Tensor:
        return warp_probs(row(ctx)[None], params)[0]

    got = torch.zeros(vocab, vocab, dtype=torch.float64)
    for x0, x1 in itertools.product(range(vocab), repeat=2):
        weight = q0[x0] * q1[x0][x1]
        if weight == 0:
            continue
        draft = data.draw(probs_tree_around(vocab, [x0, x1], [q0, q1[x0]]))
        logits = tree_logits(row, context, draft)
        nodes = first_chain_nodes(draft)
        p = warp_probs(logits[[0, *(1 + i for i in nodes)]], params)
        q = draft.probs[nodes]
        a0 = acceptance_probs(p[:1], q[:1], torch.tensor([x0]))[0]
        a1 = acceptance_probs(p[1:2], q[1:2], torch.tensor([x1]))[0]
        out = torch.zeros(vocab, vocab, dtype=torch.float64)
        r0 = residual(p[0], q[0])
        out += (1 - a0) * torch.stack([r0[y] * target_after(context + (y,)) for y in range(vocab)])
        out[x0] += a0 * ((1 - a1) * residual(p[1], q[1]))
        out[x0, x1] += a0 * a1
        got += weight * out
    expected = torch.stack([target_after(context)[y] * target_after(context + (y,)) for y in range(vocab)])
    torch.testing.assert_close(got, expected, atol=1e-9, rtol=0)


@HEAVY_SETTINGS
@given(data=st.data(), seed=st.integers(0, 2**32))
def test_probs_tree_is_verified_as_its_first_chain(data: st.DataObject, seed: int) -> None:
    """The wiring: same uniforms, same verdict as the first chain alone, in tree node indices."""
    vocab = data.draw(st.integers(2, 5))
    depth = data.draw(st.integers(1, 3))
    chain = [data.draw(st.integers(0, vocab - 1)) for _ in range(depth)]
    q = [data.draw(distributions(vocab)) for _ in range(depth)]
    draft = data.draw(probs_tree_around(vocab, chain, q))
    logits = torch.tensor(
        data.draw(st.lists(st.lists(st.floats(-5, 5), min_size=vocab, max_size=vocab), min_size=1 + len(draft), max_size=1 + len(draft))),
        dtype=torch.float64,
    )
    params = data.draw(sampling_params(vocab))
    nodes = first_chain_nodes(draft)
    as_chain = verify(logits[[0, *(1 + i for i in nodes)]], Draft(tokens=chain, probs=torch.stack(q)), params, make_generator(seed))
    as_tree = verify(logits, draft, params, make_generator(seed))
    assert as_tree == Verdict(path=[nodes[i] for i in as_chain.path], tokens=as_chain.tokens)


# --- greedy stays greedy; batches equal single requests ----------------------------------------


@st.composite
def mixed_requests(draw: st.DrawFn) -> list[tuple[torch.Tensor, Draft | None, SamplingParams, int]]:
    vocab = draw(st.integers(2, 5))
    requests = []
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["none", "chain", "tree", "probs_tree"]))
        draft: Draft | None = None
        if kind == "chain":
            draft = Draft(tokens=draw(st.lists(st.integers(0, vocab - 1), min_size=1, max_size=3)))
        elif kind in ("tree", "probs_tree"):
            draft = draw(trees(vocab, max_nodes=5))
            if kind == "probs_tree":
                probs = torch.stack([draw(distributions(vocab)) for _ in range(len(draft))])
                draft = Draft(tokens=draft.tokens, parents=draft.parents, probs=probs)
        n = 0 if draft is None else len(draft)
        rows = st.lists(st.lists(st.floats(-5, 5), min_size=vocab, max_size=vocab), min_size=n + 1, max_size=n + 1)
        logits = torch.tensor(draw(rows), dtype=torch.float64)
        params = GREEDY if draw(st.booleans()) else draw(sampling_params(vocab))
        requests.append((logits, draft, params, draw(st.integers(0, 2**32))))
    return requests


@HEAVY_SETTINGS
@given(requests=mixed_requests())
def test_batch_equals_per_request(requests: list[tuple[torch.Tensor, Draft | None, SamplingParams, int]]) -> None:
    one_by_one = [verify(x, d, p, make_generator(s)) for x, d, p, s in requests]
    logits, drafts, params, seeds = zip(*requests)
    batched = verify_batch(logits, drafts, params, [make_generator(s) for s in seeds])
    assert batched == one_by_one


def test_one_warp_call_per_batch(monkeypatch: pytest.MonkeyPatch) -> None:
    from spec_sdk.verify import chain

    calls = []
    real = chain.warp_probs
    monkeypatch.setattr(chain, "warp_probs", lambda x, p: calls.append(x.shape[0]) or real(x, p))
    params = SamplingParams(temperature=1.0)
    logits = [torch.zeros(3, 4), torch.zeros(2, 4), torch.zeros(4, 4)]
    drafts = [
        Draft(tokens=[1, 2], parents=[-1, -1]),
        Draft(tokens=[1]),
        Draft(tokens=[1, 2, 3], parents=[-1, 0, -1], probs=torch.full((3, 4), 0.25)),
    ]
    verify_batch(logits, drafts, [params] * 3, [make_generator(i) for i in range(3)])
    assert calls == [3 + 2 + 3]  # the probs tree contributes its root + first chain (nodes 0, 1)
