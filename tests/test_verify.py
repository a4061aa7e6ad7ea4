"""Verification is lossless: exact output distributions by enumeration, the sampler's own wiring
with chosen uniforms, chi-square on its random path, greedy equivalence on chains and trees, and
batch == per request."""

from __future__ import annotations

from collections import Counter
from typing import Iterator, Sequence

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.stats import chisquare

from spec_sdk.types import Draft, SamplingParams, Verdict
from spec_sdk.verify import (
    acceptance_probs,
    make_generator,
    residual,
    sample,
    sample_with_uniforms,
    verify,
    verify_batch,
    warp_probs,
)
from spec_sdk.verify import keyed

# At least these many cases; a profile that asks for more (conftest's "thorough") gets more.
SETTINGS = settings(max_examples=max(150, settings.default.max_examples), deadline=None)
HEAVY_SETTINGS = settings(max_examples=max(100, settings.default.max_examples), deadline=None)
GREEDY = SamplingParams(temperature=0.0)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    """These tensors are tiny: intra-op threads gain nothing, and on a busy shared machine every
    parallel region waits for a descheduled worker (milliseconds per op). Restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --- strategies -------------------------------------------------------------------------------


@st.composite
def target_logits(draw: st.DrawFn, vocab: int, rows: int) -> torch.Tensor:
    row = st.lists(st.floats(-5.0, 5.0, allow_nan=False), min_size=vocab, max_size=vocab)
    return torch.tensor([draw(row) for _ in range(rows)], dtype=torch.float64)


@st.composite
def tie_prone_logits(draw: st.DrawFn, vocab: int, rows: int) -> torch.Tensor:
    """Small integers, so equal maxima are common and the first-index tie rule is exercised."""
    row = st.lists(st.integers(0, 3), min_size=vocab, max_size=vocab)
    return torch.tensor([draw(row) for _ in range(rows)], dtype=torch.float64)


@st.composite
def sampling_params(draw: st.DrawFn, vocab: int) -> SamplingParams:
    return SamplingParams(
        temperature=draw(st.floats(0.05, 3.0, exclude_min=True)),
        top_k=draw(st.integers(0, vocab + 1)),
        top_p=draw(st.one_of(st.floats(0.0, 1.0, exclude_min=True), st.just(1.0))),
        min_p=draw(st.one_of(st.floats(0.0, 1.0, exclude_max=True), st.just(0.0))),
    )


@st.composite
def distributions(draw: st.DrawFn, vocab: int) -> torch.Tensor:
    """A draft distribution, often with zeros (including where the target has mass)."""
    weights = draw(
        st.lists(st.one_of(st.just(0.0), st.floats(0.01, 1.0)), min_size=vocab, max_size=vocab).filter(
            lambda w: sum(w) > 0
        )
    )
    q = torch.tensor(weights, dtype=torch.float64)
    return q / q.sum()


def draft_q(draw: st.DrawFn, p: torch.Tensor) -> torch.Tensor:
    """Any q, or exactly p (where no token is ever rejected and the residual is all zero)."""
    return p.clone() if draw(st.booleans()) else draw(distributions(p.numel()))


def one_hot(token: int, vocab: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(token), vocab).to(torch.float64)


def first_token_distribution(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """P(emitted = y) = sum_x q(x) [a(x) 1{y = x} + (1 - a(x)) residual(y)], from the sampler's functions."""
    vocab = p.numel()
    a = acceptance_probs(p.expand(vocab, vocab), q.expand(vocab, vocab), torch.arange(vocab))
    assert bool(((a >= 0) & (a <= 1)).all())
    return q * a + (q * (1 - a)).sum() * residual(p, q)


# --- 1. exact distributions by enumeration ----------------------------------------------------


@SETTINGS
@given(data=st.data())
def test_one_step_output_distribution_is_exactly_the_target(data: st.DataObject) -> None:
    vocab = data.draw(st.integers(2, 6))
    p = warp_probs(data.draw(target_logits(vocab, 1)), data.draw(sampling_params(vocab)))[0]
    q = draft_q(data.draw, p)
    torch.testing.assert_close(first_token_distribution(p, q), p, atol=1e-9, rtol=0)


@SETTINGS
@given(data=st.data())
def test_deterministic_draft_output_distribution_is_exactly_the_target(data: st.DataObject) -> None:
    vocab = data.draw(st.integers(2, 6))
    p = warp_probs(data.draw(target_logits(vocab, 1)), data.draw(sampling_params(vocab)))[0]
    for x in range(vocab):
        token = torch.tensor([x])
        a = acceptance_probs(p.unsqueeze(0), None, token)[0]
        # None (a deterministic proposer) means exactly a one-hot q.
        assert float(a) == float(acceptance_probs(p.unsqueeze(0), one_hot(x, vocab).unsqueeze(0), token)[0])
        emitted = a * one_hot(x, vocab) + (1 - a) * residual(p, one_hot(x, vocab))
        torch.testing.assert_close(emitted, p, atol=1e-9, rtol=0)


@HEAVY_SETTINGS
@given(data=st.data())
def test_two_token_chain_joint_distribution_is_exactly_the_target(data: st.DataObject) -> None:
    vocab = data.draw(st.integers(2, 5))
    params = data.draw(sampling_params(vocab))
    p0, p1 = warp_probs(data.draw(target_logits(vocab, 2)), params)
    q0, q1 = draft_q(data.draw, p0), draft_q(data.draw, p1)
    a0 = acceptance_probs(p0.expand(vocab, vocab), q0.expand(vocab, vocab), torch.arange(vocab))
    reject0 = (q0 * (1 - a0)).sum()
    # Rejected at node 0: y0 is the residual's, and y1 comes from the next step, whose target row is
    # p1 here. Accepted: y0 = x0, and y1 is whatever node 1's step emits.
    joint = reject0 * torch.outer(residual(p0, q0), p1) + torch.outer(q0 * a0, first_token_distribution(p1, q1))
    torch.testing.assert_close(joint, torch.outer(p0, p1), atol=1e-9, rtol=0)


def test_acceptance_edge_cases() -> None:
    p = torch.tensor([[0.5, 0.5, 0.0]], dtype=torch.float64)
    q = torch.tensor([[0.0, 0.25, 0.75]], dtype=torch.float64)
    assert acceptance_probs(p, q, torch.tensor([0])).tolist() == [0.0]  # q(x) == 0: reject
    assert acceptance_probs(p, q, torch.tensor([1])).tolist() == [1.0]  # p > q: capped at 1
    assert acceptance_probs(p, q, torch.tensor([2])).tolist() == [0.0]  # p(x) == 0
    torch.testing.assert_close(residual(p[0], q[0]), torch.tensor([2 / 3, 1 / 3, 0.0], dtype=torch.float64))
    torch.testing.assert_close(residual(p[0], p[0]), p[0])  # nothing left over: fall back to p


# --- 2. the sampler's random path uses exactly those functions --------------------------------


@HEAVY_SETTINGS
@given(data=st.data())
def test_sampler_wiring_with_chosen_uniforms(data: st.DataObject) -> None:
    """Feed verify chosen uniforms and predict its verdict from the pure functions alone."""
    vocab = data.draw(st.integers(2, 5))
    n = data.draw(st.integers(0, 3))
    params = data.draw(sampling_params(vocab))
    logits = data.draw(target_logits(vocab, n + 1))
    p = warp_probs(logits, params)
    deterministic = data.draw(st.booleans())
    q = torch.stack([draft_q(data.draw, p[i]) for i in range(n)]) if n else torch.zeros(0, vocab)
    tokens = [data.draw(st.integers(0, vocab - 1)) for _ in range(n)]
    if deterministic:
        q = torch.stack([one_hot(t, vocab) for t in tokens]) if n else q
    unit = st.floats(0.0, 1.0, exclude_max=True)
    # a generator draws n tests, n residual draws and the target's n + 1 own draws, in turn
    u = torch.tensor(data.draw(st.lists(unit, min_size=3 * n + 1, max_size=3 * n + 1)), dtype=torch.float64)
    tests, residuals, plain = u[:n], u[n : 2 * n], u[2 * n :]
    draft = Draft(tokens=tokens, probs=None if deterministic else q) if n else None

    a = acceptance_probs(p[:n], q, torch.tensor(tokens, dtype=torch.int64)) if n else torch.zeros(0)
    own = [int(sample_with_uniforms(p[i : i + 1], plain[i : i + 1])[0]) for i in range(n + 1)]
    accepted = 0
    while accepted < n and (own[accepted] == tokens[accepted] if deterministic else tests[accepted] < a[accepted]):
        accepted += 1
    if accepted < n and not deterministic:  # a sampled draft token rejected: from the residual
        expected_extra = int(sample_with_uniforms(residual(p[accepted], q[accepted]).unsqueeze(0),
                                                  residuals[accepted : accepted + 1])[0])
    else:  # a deterministic draft's first miss, or after the last draft token: the target's own
        expected_extra = own[accepted]

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(keyed, "uniforms", lambda generator, count: u[:count].clone())
        verdict = verify(logits, draft, params, None)
    assert verdict == Verdict(path=range(accepted), tokens=tuple(tokens[:accepted]) + (expected_extra,))


@given(seed=st.integers(0, 2**63), start=st.integers(0, 5000), tail=st.lists(st.integers(0, 50), max_size=12),
       path=st.lists(st.integers(0, 50), max_size=6))
def test_keyed_chain_draws_are_keyed_by_position_and_the_tokens_before(
    seed: int, start: int, tail: list[int], path: list[int]
) -> None:
    """The engine's draws (spec_sdk.verify.keyed): tests and residual draws by position, the
    target's own draws by position and the tokens before it (the draft's, accepted up to there)."""
    book = keyed.DrawBook(seed)
    n = len(path)
    # a sampled draft: its tests and residual draws, and the target's own draw after its last token
    tests, residuals, after = keyed.chain_draws(keyed.Keyed(book, start, tail), path, sampled=True)
    assert tests.tolist() == [keyed.keyed_uniform(seed, start + i, keyed.ACCEPT) for i in range(n)]
    assert residuals.tolist() == [keyed.keyed_uniform(seed, start + i, keyed.EMIT) for i in range(n)]
    assert after.tolist() == [book.plain(start + n, [*tail, *path])]
    # a deterministic one: the target's own draw at every offset (its tests are never used)
    _, _, plain = keyed.chain_draws(keyed.Keyed(book, start, tail), path, sampled=False)
    assert plain.tolist() == [book.plain(start + i, [*tail, *path[:i]]) for i in range(n + 1)]
    # a proposer that drew the first position in that context: the target's draw there is the
    # proposer's (shared), and after that one draw the target draws afresh
    drawn = book.draft(start, tail)
    assert drawn == plain[0].item()
    assert book.plain(start, tail) != drawn


def _draws(q: torch.Tensor, count: int, seed: int) -> torch.Tensor:
    return torch.multinomial(q, count, replacement=True, generator=torch.Generator().manual_seed(seed))


def _assert_fits(observed: Sequence[int] | torch.Tensor, expected_probs: torch.Tensor) -> None:
    observed = torch.as_tensor(observed, dtype=torch.float64)
    support = expected_probs > 0
    assert observed[~support].sum() == 0, "drew a token the target cannot produce"
    total = observed.sum()
    expected = expected_probs[support] / expected_probs[support].sum() * total
    assert chisquare(observed[support].numpy(), expected.numpy()).pvalue > 1e-4


def test_sampled_chain_matches_target_empirically() -> None:
    vocab, count = 5, 20_000
    logits = torch.tensor(
        [[1.0, 0.2, -0.5, 2.0, 0.0], [0.0, 1.5, 0.5, -1.0, 0.3], [-0.2, 0.0, 1.0, 0.4, 0.8]], dtype=torch.float64
    )
    params = SamplingParams(temperature=0.9, top_k=4, min_p=0.05)
    p = warp_probs(logits, params)
    assert (p[0] == 0).any()  # the draft below proposes a token the target filtered out
    q = torch.tensor([[0.1, 0.05, 0.5, 0.05, 0.3], [0.3, 0.1, 0.2, 0.3, 0.1]], dtype=torch.float64)
    x0, x1 = _draws(q[0], count, 1), _draws(q[1], count, 2)
    drafts = [Draft(tokens=(int(a), int(b)), probs=q) for a, b in zip(x0, x1)]
    g = make_generator(2024)
    verdicts = verify_batch([logits] * count, drafts, [params] * count, [g] * count)

    _assert_fits(torch.bincount(torch.tensor([v.tokens[0] for v in verdicts]), minlength=vocab), p[0])
    beta = torch.minimum(p[:2], q).sum(dim=1)  # probability that each node is accepted
    accepted = Counter(v.num_accepted for v in verdicts)
    _assert_fits(
        [accepted[0], accepted[1], accepted[2]],
        torch.stack([1 - beta[0], beta[0] * (1 - beta[1]), beta[0] * beta[1]]),
    )
    # What the rejection emits, and the bonus after full acceptance, have their own distributions.
    rejected_first = [v.tokens[0] for v in verdicts if v.num_accepted == 0]
    _assert_fits(torch.bincount(torch.tensor(rejected_first), minlength=vocab), residual(p[0], q[0]))
    bonus = [v.tokens[2] for v in verdicts if v.num_accepted == 2]
    _assert_fits(torch.bincount(torch.tensor(bonus), minlength=vocab), p[2])


def test_deterministic_draft_matches_target_empirically() -> None:
    vocab, count = 6, 20_000
    logits = torch.tensor([[0.3, 1.2, -0.4, 0.9, 0.0, -1.0], [0.5, 0.0, 0.1, 0.2, 1.0, -0.5]], dtype=torch.float64)
    params = SamplingParams(temperature=1.3, top_p=0.9)
    p = warp_probs(logits, params)
    g = make_generator(77)
    verdicts = verify_batch([logits] * count, [Draft(tokens=(1,))] * count, [params] * count, [g] * count)
    _assert_fits(torch.bincount(torch.tensor([v.tokens[0] for v in verdicts]), minlength=vocab), p[0])
    assert Counter(v.num_accepted for v in verdicts)[1] == pytest.approx(count * float(p[0, 1]), rel=0.05)


def test_target_only_sampling_is_plain_sampling() -> None:
    logits = torch.randn(1, 40, generator=torch.Generator().manual_seed(3))
    params = SamplingParams(temperature=0.8, top_p=0.95)
    probs = warp_probs(logits, params)
    for seed in range(20):
        verdict = verify(logits, None, params, make_generator(seed))
        assert verdict.path == ()
        assert verdict.tokens == tuple(sample(probs, [make_generator(seed)]).tolist())


@pytest.mark.parametrize("n", [0, 1, 3])
def test_generator_advances_the_same_whatever_is_accepted(n: int) -> None:
    logits = torch.randn(1 + n, 8, generator=torch.Generator().manual_seed(n))
    reference = make_generator(5)
    torch.rand(3 * n + 1, generator=reference, dtype=torch.float64)  # tests, residual draws, own draws
    for params in (SamplingParams(temperature=1.0), SamplingParams(temperature=0.05)):
        g = make_generator(5)
        verify(logits, Draft(tokens=[0] * n) if n else None, params, g)
        assert torch.equal(g.get_state(), reference.get_state())


def test_token_the_draft_could_not_have_drawn_is_never_accepted() -> None:
    logits = torch.zeros(2, 4, dtype=torch.float64)
    q = torch.tensor([[0.0, 0.5, 0.5, 0.0]], dtype=torch.float64)
    for seed in range(50):
        verdict = verify(logits, Draft(tokens=[0], probs=q), SamplingParams(temperature=1.0), make_generator(seed))
        assert verdict.num_accepted == 0


# --- 3. greedy: chains, trees, and batches ----------------------------------------------------


def first_argmax(row: torch.Tensor) -> int:
    values = row.tolist()
    return values.index(max(values))


@SETTINGS
@given(data=st.data())
def test_greedy_chain_accepts_the_longest_argmax_prefix(data: st.DataObject) -> None:
    vocab = data.draw(st.integers(2, 6))
    n = data.draw(st.integers(0, 6))
    logits = data.draw(st.one_of(target_logits(vocab, n + 1), tie_prone_logits(vocab, n + 1)))
    best = [first_argmax(row) for row in logits]
    # Each token either follows the target (so long prefixes are common) or is arbitrary.
    tokens = [data.draw(st.one_of(st.just(best[i]), st.integers(0, vocab - 1))) for i in range(n)]
    accepted = next((i for i in range(n) if tokens[i] != best[i]), n)
    explicit_chain = data.draw(st.booleans())
    draft = Draft(tokens=tokens, parents=list(range(-1, n - 1)) if explicit_chain else None) if n else None
    verdict = verify(logits, draft, GREEDY, None)
    assert verdict.path == tuple(range(accepted))
    assert verdict.tokens == tuple(tokens[:accepted]) + (best[accepted],)


@st.composite
def greedy_trees(draw: st.DrawFn) -> tuple[torch.Tensor, Draft]:
    """A tree with distinct sibling tokens (as a real proposer sends), tokens often on the argmax."""
    vocab = draw(st.integers(2, 5))
    n = draw(st.integers(1, 8))
    logits = draw(st.one_of(target_logits(vocab, n + 1), tie_prone_logits(vocab, n + 1)))
    best = [first_argmax(row) for row in logits]
    used: dict[int, set[int]] = {}
    parents, tokens = [], []
    for i in range(n):
        parent = draw(st.sampled_from([c for c in range(-1, i) if len(used.get(c, ())) < vocab]))
        free = [t for t in range(vocab) if t not in used.get(parent, set())]
        preferred = [best[parent + 1]] if best[parent + 1] in free else []
        token = draw(st.sampled_from(preferred + free))
        used.setdefault(parent, set()).add(token)
        parents.append(parent)
        tokens.append(token)
    return logits, Draft(tokens=tokens, parents=parents)


@SETTINGS
@given(tree=greedy_trees())
def test_greedy_tree_follows_the_argmax_children(tree: tuple[torch.Tensor, Draft]) -> None:
    logits, draft = tree
    assert draft.parents is not None
    best = [first_argmax(row) for row in logits]

    # Independent oracle: a node is on target iff its token and all its ancestors' are the argmax of
    # their parent's row; with distinct siblings those nodes form one chain from the root.
    def on_target(node: int) -> bool:
        parent = draft.parents[node]
        return draft.tokens[node] == best[parent + 1] and (parent == -1 or on_target(parent))

    good = [i for i in range(len(draft)) if on_target(i)]
    path: list[int] = []
    if good:
        node = max(good, key=lambda i: sum(1 for _ in _ancestors(draft, i)))
        path = list(reversed([node, *_ancestors(draft, node)]))
    verdict = verify(logits, draft, GREEDY, None)
    assert verdict.path == tuple(path)
    assert verdict.tokens == tuple(draft.tokens[i] for i in path) + (best[path[-1] + 1 if path else 0],)


def _ancestors(draft: Draft, node: int) -> list[int]:
    assert draft.parents is not None
    out = []
    while draft.parents[node] != -1:
        node = draft.parents[node]
        out.append(node)
    return out


def test_greedy_tree_picks_the_first_of_duplicate_siblings() -> None:
    logits = torch.tensor([[0.0, 5.0, 0.0], [0.0, 0.0, 9.0], [9.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    verdict = verify(logits, Draft(tokens=[1, 1, 0], parents=[-1, -1, 1]), GREEDY, None)
    assert verdict == Verdict(path=(0,), tokens=(1, 2))


def test_malformed_batches_raise() -> None:
    params = SamplingParams(temperature=1.0)
    with pytest.raises(ValueError):
        verify(torch.zeros(2, 4), None, params, None)  # one row too many for target-only
    with pytest.raises(ValueError):
        verify(torch.zeros(2, 4), Draft(tokens=[4]), GREEDY, None)  # token outside the vocabulary
    with pytest.raises(ValueError):
        verify(torch.zeros(2, 4), Draft(tokens=[1], probs=torch.ones(1, 5) / 5), params, None)
    with pytest.raises(ValueError):
        verify_batch([torch.zeros(1, 4)], [None, None], [params], [None])


@st.composite
def mixed_requests(draw: st.DrawFn) -> list[tuple[torch.Tensor, Draft | None, SamplingParams, int]]:
    vocab = draw(st.integers(2, 6))
    requests = []
    for _ in range(draw(st.integers(1, 6))):
        n = draw(st.integers(0, 4))
        logits = draw(target_logits(vocab, n + 1))
        tokens = [draw(st.integers(0, vocab - 1)) for _ in range(n)]
        kind = draw(st.sampled_from(["greedy", "greedy_tree", "sampled", "sampled_deterministic"]))
        params = GREEDY if kind.startswith("greedy") else draw(sampling_params(vocab))
        if n == 0:
            draft = None
        elif kind == "greedy_tree":
            draft = Draft(tokens=tokens, parents=[draw(st.integers(-1, i - 1)) for i in range(n)])
        elif kind == "sampled":
            probs = torch.stack([draw(distributions(vocab)) for _ in range(n)])
            draft = Draft(tokens=tokens, probs=probs.to(draw(st.sampled_from([torch.float32, torch.float64]))))
        else:
            draft = Draft(tokens=tokens)
        requests.append((logits, draft, params, draw(st.integers(0, 2**32))))
    return requests


@HEAVY_SETTINGS
@given(requests=mixed_requests())
def test_batch_equals_per_request(requests: list[tuple[torch.Tensor, Draft | None, SamplingParams, int]]) -> None:
    one_by_one = [verify(x, d, p, make_generator(s)) for x, d, p, s in requests]
    logits, drafts, params, seeds = zip(*requests)
    batched = verify_batch(logits, drafts, params, [make_generator(s) for s in seeds])
    assert batched == one_by_one


@SETTINGS
@given(data=st.data())
def test_sampled_chain_verdicts_carry_each_positions_acceptance_chances(data: st.DataObject) -> None:
    # per draft position: min(1, p(x)/q(x)) of the drawn token and sum over x of min(p, q),
    # with p the warped target rows -- for drafts with probs and for deterministic ones
    vocab = data.draw(st.integers(2, 6))
    n = data.draw(st.integers(1, 3))
    logits = data.draw(target_logits(vocab, n + 1))
    params = data.draw(sampling_params(vocab))
    tokens = data.draw(st.lists(st.integers(0, vocab - 1), min_size=n, max_size=n))
    q = torch.stack([data.draw(distributions(vocab)) for _ in range(n)]) if data.draw(st.booleans()) else None
    verdict = verify(logits, Draft(tokens=tokens, probs=q), params, make_generator(data.draw(st.integers(0, 99))))
    p = warp_probs(logits, params)[:n]
    dense = q if q is not None else torch.stack([one_hot(t, vocab) for t in tokens])
    want_token = acceptance_probs(p, q, torch.tensor(tokens))
    want = torch.minimum(p, dense).sum(dim=1).clamp(max=1.0)
    assert verdict.token_chances == pytest.approx(want_token.tolist(), abs=1e-6)
    assert verdict.chances == pytest.approx(want.tolist(), abs=1e-6)
    greedy = verify(logits, Draft(tokens=tokens), GREEDY, None)
    assert greedy.chances == () and greedy.token_chances == ()
