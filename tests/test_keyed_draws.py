"""Sampling draws keyed by (seed, position, purpose) (spec_sdk.verify.keyed): the same seed gives
the same text whatever the draft length, draws are fresh where they must be, and the keyed
verifier stays lossless (its chi-square power check here; the distribution tests of every
proposer in test_lossless_sampling run through the same engine path)."""

from __future__ import annotations

from collections import Counter

import anyio
import attrs
import pytest

from spec_sdk import SamplingParams
from spec_sdk.backends.hf import HFBackend
from spec_sdk.proposers.draft_model import DraftModelProposer
from spec_sdk.proposers.ngram import NgramProposer
from spec_sdk.testing import (
    OracleProposer,
    RandomProposer,
    SampledRandomProposer,
    TableTarget,
    WrongProposer,
    chi_square,
    exact_sequence_distribution,
    greedy_next_fn,
)
from spec_sdk.testing.check import run_concurrently
from spec_sdk.testing.targets import tiny_llama
from spec_sdk.verify import keyed
from spec_sdk.verify.keyed import DrawBook, Keyed, keyed_uniform
from test_draft_model import near_copy

def _outputs(backend: object, proposers: list[object], k: int, prompts: list[list[int]],
             seeds: range) -> tuple[list[list[int]], int, int]:
    """Sampled outputs, one request per (prompt, seed) run concurrently, in that order; and the
    draft tokens accepted and drafted."""
    jobs = [(p, s) for p in prompts for s in seeds]
    params = [SamplingParams(temperature=0.9, max_new_tokens=12, ignore_eos=True, seed=s) for _, s in jobs]
    done, metrics = anyio.run(run_concurrently, backend, proposers, [p for p, _ in jobs], params, k)
    assert len(done) == len(jobs)
    return [list(c.token_ids) for c in done], metrics.totals.accepted, metrics.totals.drafted


DETERMINISTIC = {
    "ngram": lambda t: NgramProposer(min_n=1, max_n=2),
    "oracle": lambda t: OracleProposer(greedy_next_fn(t)),
    "wrong": lambda t: WrongProposer(greedy_next_fn(t), t.vocab_size),
    "random": lambda t: RandomProposer(t.vocab_size, seed=11),
}


@pytest.mark.parametrize("kind", sorted(DETERMINISTIC))
def test_a_deterministic_proposer_writes_the_target_alone_text_for_a_seed(kind: str) -> None:
    """Sampled, a deterministic draft is matched against the target's own keyed draws: at any k
    the text is, token for token, what the target alone writes from that seed. (Drawn in turn,
    as before, the texts were different draws of the same law.)"""
    target = TableTarget(vocab_size=6, order=2, seed=3)
    prompts, seeds = [[1, 2, 3], [4, 4], [5, 0, 1, 2]], range(40)
    alone, _, _ = _outputs(target, [], 0, prompts, seeds)
    assert len({tuple(o) for o in alone}) > 20  # the seeds do draw different texts
    for k in (1, 3, 6):
        out, accepted, drafted = _outputs(target, [DETERMINISTIC[kind](target)], k, prompts, seeds)
        assert out == alone
        assert drafted > 0 and (accepted > 0 or kind == "wrong")


def test_a_draft_model_that_is_the_target_writes_the_target_alone_text() -> None:
    """A sampling draft model draws its token with the key the target draws its own with: where
    q is p, every draft token is accepted and is the target's own token, at any k."""
    backend = HFBackend(tiny_llama(seed=0))
    prompts, seeds = [[4, 8, 15, 16, 23, 42], [7, 7, 7, 7]], range(6)
    alone, _, _ = _outputs(backend, [], 0, prompts, seeds)
    for k in (2, 5):
        out, accepted, drafted = _outputs(HFBackend(tiny_llama(seed=0)), [DraftModelProposer(tiny_llama(seed=0))],
                                          k, prompts, seeds)
        assert out == alone
        assert accepted == drafted > 0


def test_a_draft_model_at_two_lengths_shares_most_of_its_text() -> None:
    """With a draft model that is not the target, runs at two lengths still draw alike where a
    position is drafted in one and the target's own in the other and q is near p; a rejected
    draft token's residual draw is where they part. Drawn in turn, they parted at once."""
    prompts, seeds = [[4, 8, 15, 16, 23, 42], [1, 2, 3], [30, 31, 2, 9, 11]], range(6)
    runs = [_outputs(HFBackend(tiny_llama(seed=0)), [DraftModelProposer(near_copy(noise=0.05))], k, prompts, seeds)
            for k in (2, 5)]
    (short, accepted2, drafted2), (long, accepted5, drafted5) = runs
    assert 0 < accepted2 < drafted2 and 0 < accepted5 < drafted5
    shared = [next((i for i, (a, b) in enumerate(zip(x, y)) if a != b), len(x)) for x, y in zip(short, long)]
    assert sum(shared) >= 0.5 * sum(map(len, short)), shared


def test_keyed_uniforms_depend_on_every_part_of_the_key() -> None:
    base = keyed_uniform(5, 100, keyed.ACCEPT)
    assert 0.0 <= base < 1.0
    assert keyed_uniform(5, 100, keyed.ACCEPT) == base
    others = {keyed_uniform(6, 100, keyed.ACCEPT), keyed_uniform(5, 101, keyed.ACCEPT),
              keyed_uniform(5, 100, keyed.EMIT), keyed_uniform(5, 100, keyed.TOKEN)}
    assert base not in others and len(others) == 4
    # one step's uniforms: offsets from the step's start
    u = Keyed(DrawBook(5), 98, []).at([(2, keyed.ACCEPT), (3, keyed.EMIT)])
    assert u.tolist() == [base, keyed_uniform(5, 101, keyed.EMIT)]


def test_a_token_drawn_again_in_the_same_context_draws_afresh() -> None:
    """A drafted token is seen (its chances, scoring in hindsight) before a later step may draft
    the same position again, or the target draw there; reusing its uniform would let what was
    seen pick the token."""
    book = DrawBook(9)
    shared = book.plain(10, [1, 2, 3])  # nothing drawn there yet: what a proposer would draw
    first = book.draft(10, [1, 2, 3])
    assert first == shared
    again = book.draft(10, [1, 2, 3])
    after = book.plain(10, [1, 2, 3])
    elsewhere = book.draft(10, [1, 2, 4])
    assert len({first, again, after, elsewhere}) == 4
    # another run (a lane at another k) from the same context draws what this one first did
    assert DrawBook(9).draft(10, [1, 2, 3]) == first
    book.passed(11)
    assert book.plain(10, [1, 2, 3]) == after  # (a small book keeps its counts)


def test_the_draw_after_a_sampled_draft_is_the_last_of_the_plain_draws() -> None:
    """A sampled draft's step uses the target's own draw after its last token only; it must be
    the draw a deterministic draft of the same tokens would be matched against there."""
    book = DrawBook(7)
    step = Keyed(book, 40, list(range(100, 112)))
    for path in ([], [5], [5, 9, 2], list(range(10))):
        assert step.after(path).tolist() == step.plains(path)[-1:].tolist()
    book.draft(40 + 3, [*range(104, 112), 5, 9, 2])  # a draw counted there moves both alike
    assert step.after([5, 9, 2]).tolist() == step.plains([5, 9, 2])[-1:].tolist()


def test_chi_square_catches_emissions_keyed_like_the_tests(monkeypatch: pytest.MonkeyPatch) -> None:
    """Power check of the keyed path: were a rejected position's emission drawn with the uniform
    that rejected its draft (one purpose for both), the output would be biased, and the
    distribution test that every proposer passes must fail."""
    monkeypatch.setattr(keyed, "EMIT", keyed.ACCEPT)
    target = TableTarget(vocab_size=5, order=2, seed=3)
    params = SamplingParams(temperature=1.0, max_new_tokens=3)
    n = 3000
    exact = exact_sequence_distribution(target, [1, 2, 3], 3, params)
    all_params = [attrs.evolve(params, seed=i) for i in range(n)]
    done, _ = anyio.run(run_concurrently, target, [SampledRandomProposer(5, seed=11)], [[1, 2, 3]] * n, all_params, 3)
    counts: Counter[tuple[int, ...]] = Counter()
    for c in done:
        counts[tuple(c.token_ids)] = counts.get(tuple(c.token_ids), 0) + 1
    _, _, p = chi_square(counts, exact, n)
    assert p < 1e-6
