"""The draft-model proposer: lossless (greedy and sampled), its KV cache rolled back exactly,
batched drafting equal to drafting alone, and the exact `q` under sampling."""

from __future__ import annotations

import anyio
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spec_sdk import ConfigError, SpecEngine
from spec_sdk.backends.hf import HFBackend
from spec_sdk.proposers.base import RequestView
from spec_sdk.proposers.draft_model import DraftModelProposer
from spec_sdk.testing import check_lossless
from spec_sdk.testing.check import run_concurrently
from spec_sdk.testing.targets import TableTarget, reference_greedy, tie_aware_equal, tiny_llama
from spec_sdk.types import SamplingParams, SpecStats
from spec_sdk.verify.warp import warp_probs


def near_copy(vocab_size: int = 64, noise: float = 0.15, seed: int = 0) -> torch.nn.Module:
    """A draft that agrees with `tiny_llama(seed=0)` often but not always: its weights plus noise."""
    draft = tiny_llama(vocab_size=vocab_size, seed=seed)
    gen = torch.Generator().manual_seed(1234)
    with torch.no_grad():
        for p in draft.parameters():
            p.add_(noise * torch.randn(p.shape, generator=gen, dtype=p.dtype))
    return draft


RUNNERS = ("hf", "native")


def drafts_with(runner: str):
    def make_draft(target: object) -> DraftModelProposer:
        vocab = int(target.vocab_size)  # type: ignore[attr-defined]
        if vocab == 64:
            return DraftModelProposer(near_copy(), runner=runner)
        return DraftModelProposer(tiny_llama(vocab_size=vocab, seed=3), runner=runner)

    return make_draft


def cached(proposer: DraftModelProposer, rid: str) -> tuple[int, int]:
    """(entries the runner's cache holds for `rid`, ids the proposer thinks it holds)."""
    if proposer._native is not None:
        return proposer._native.backend.cached_length(rid), len(proposer._native.ids[rid])
    state = proposer._states[rid]
    return state.cache.get_seq_length(), len(state.ids)


def view(rid: str, tokens: list[int], params: SamplingParams | None = None) -> RequestView:
    return RequestView(rid, tokens, len(tokens), params or SamplingParams(), SpecStats())


def full_logits(model: torch.nn.Module, ids: list[int]) -> torch.Tensor:
    """Next-token logits after `ids`, from scratch (no cache): the oracle for the cached drafts."""
    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids])).logits[0, -1]


@pytest.mark.parametrize("runner", RUNNERS)
def test_check_lossless_greedy_and_sampling(runner: str) -> None:
    report = check_lossless(drafts_with(runner), greedy_examples=12, sampling_samples=1500)
    assert report.greedy_cases == 12
    assert 0 < report.accepted < report.drafted  # a draft that is sometimes right, sometimes wrong
    assert report.samples == 1500 and report.p_value > 1e-4


@pytest.mark.parametrize("runner", RUNNERS)
def test_draft_equal_to_target_is_always_accepted(runner: str) -> None:
    target = tiny_llama(seed=0)
    prompts = [[1, 2, 3], list(range(5, 25)), [9] * 12]
    done, metrics = anyio.run(
        run_concurrently, HFBackend(target), [DraftModelProposer(tiny_llama(seed=0), runner=runner)], prompts,
        [SamplingParams(max_new_tokens=21)] * 3, 4,
    )
    assert metrics.totals.drafted > 0 and metrics.totals.accepted == metrics.totals.drafted
    for prompt, c in zip(prompts, done):
        ref, margins = reference_greedy(target, prompt, 21)
        assert tie_aware_equal(list(c.token_ids), ref, margins)


@pytest.mark.parametrize("runner", RUNNERS)
@settings(max_examples=15, deadline=None, database=None, derandomize=True)
@given(
    lens=st.lists(st.integers(1, 20), min_size=2, max_size=5),
    budget=st.integers(1, 6),
    accepted=st.lists(st.integers(0, 6), min_size=5, max_size=5),
)
def test_batched_drafts_equal_drafts_alone_across_rollbacks(runner: str, lens: list[int], budget: int,
                                                             accepted: list[int]) -> None:
    """Drafting a batch together gives each request exactly what drafting it alone gives, step
    after step, while requests accept part of their drafts (the cache rolls back)."""
    draft = near_copy()
    together, alone = DraftModelProposer(draft, runner=runner), DraftModelProposer(draft, runner=runner)
    seqs = [[(7 * i + 3 * j) % 64 for j in range(n)] for i, n in enumerate(lens)]
    for step in range(3):
        views = [view(f"r{i}", s) for i, s in enumerate(seqs)]
        batch = together.propose(views, [budget] * len(views))
        for i, v in enumerate(views):
            (solo,) = alone.propose([v], [budget])
            assert batch[i] is not None and solo is not None
            assert batch[i].tokens == solo.tokens
            assert batch[i].score == pytest.approx(solo.score, rel=1e-9)
            # the oracle: every draft token is the argmax of a from-scratch forward
            ids = list(seqs[i])
            for t in batch[i].tokens:
                assert t == int(full_logits(draft, ids).argmax())
                ids.append(t)
        for i, d in enumerate(batch):
            assert d is not None
            keep = min(accepted[(i + step) % 5], len(d.tokens))
            seqs[i] = seqs[i] + list(d.tokens[:keep]) + [(seqs[i][-1] + 11) % 64]
    for i in range(len(seqs)):
        held, ids = cached(together, f"r{i}")
        assert held == ids > 0


@pytest.mark.parametrize("runner", RUNNERS)
def test_sampled_draft_reports_the_distribution_it_drew_from(runner: str) -> None:
    draft = near_copy()
    proposer = DraftModelProposer(draft, runner=runner)
    params = SamplingParams(temperature=0.7, top_k=20, top_p=0.9, seed=5)
    prompt = [4, 8, 15, 16, 23, 42]
    (d,) = proposer.propose([view("s", prompt, params)], [5])
    assert d is not None and d.probs is not None and d.probs.shape == (5, 64)
    ids = list(prompt)
    for i, t in enumerate(d.tokens):
        q = warp_probs(full_logits(draft, ids).unsqueeze(0).float(), params)[0]
        torch.testing.assert_close(d.probs[i], q, atol=1e-6, rtol=1e-5)
        assert d.probs[i, t] > 0
        ids.append(t)
    # seeded: the same request draws the same draft
    (again,) = DraftModelProposer(draft, runner=runner).propose([view("s", prompt, params)], [5])
    assert again is not None and again.tokens == d.tokens


def test_greedy_under_sampling_when_sample_is_false() -> None:
    proposer = DraftModelProposer(near_copy(), sample=False)
    (d,) = proposer.propose([view("g", [1, 2, 3], SamplingParams(temperature=0.8, seed=1))], [4])
    assert d is not None and d.probs is None


def test_low_confidence_stops_drafting_and_score_is_expected_accepted() -> None:
    draft = near_copy()
    prompt = [3, 1, 4, 1, 5]
    (full,) = DraftModelProposer(draft).propose([view("a", prompt)], [6])
    assert full is not None and len(full.tokens) == 6
    ids, conf = list(prompt), []
    for t in full.tokens:
        conf.append(float(torch.softmax(full_logits(draft, ids).float(), -1).max()))
        ids.append(t)
    expected, run = 0.0, 1.0
    for c in conf:
        run *= c
        expected += run
    assert full.score == pytest.approx(expected, rel=1e-5)
    floor = sorted(conf)[len(conf) // 2]
    (short,) = DraftModelProposer(draft, min_confidence=floor).propose([view("a", prompt)], [6])
    first_low = next(i for i, c in enumerate(conf) if c < floor)
    # drafting stops right after the first token below the floor, which is still proposed
    assert short is not None and short.tokens == full.tokens[: first_low + 1]


def test_vocabulary_mismatch_is_refused_at_bind() -> None:
    with pytest.raises(ConfigError, match="vocabularies must have the same size"):
        SpecEngine(HFBackend(tiny_llama(seed=0)), proposers={"draft_model": {"model": tiny_llama(vocab_size=32)}})
    with pytest.raises(ConfigError, match="min_confidence"):
        DraftModelProposer(tiny_llama(), min_confidence=1.5)


def test_tokenizer_mismatch_is_refused() -> None:
    from transformers import AutoTokenizer

    from spec_sdk.zoo.build import default_zoo_dir

    zoo_dir = default_zoo_dir("tiny")
    path = zoo_dir / "target"
    tok = AutoTokenizer.from_pretrained(str(path))
    other = AutoTokenizer.from_pretrained(str(path))
    other.add_tokens(["<extra-token-not-in-target>"])
    proposer = DraftModelProposer(zoo_dir / "draft", tokenizer=other)
    with pytest.raises(ConfigError, match="tokenizer differs"):
        proposer.bind(HFBackend(path), tok)
    DraftModelProposer(zoo_dir / "draft").bind(HFBackend(path), tok)  # the zoo's own pair binds


def test_table_target_with_padded_draft_head() -> None:
    """A draft head wider than the target's vocabulary (padded) is cut to the target's width
    when both tokenizers agree; probs always have the target's width."""
    proposer = DraftModelProposer(tiny_llama(vocab_size=8, seed=2))
    proposer.width = 5  # what bind() sets for a 5-token target whose tokenizer fits
    (d,) = proposer.propose([view("p", [1, 2], SamplingParams(temperature=1.0, seed=0))], [3])
    assert d is not None and d.probs is not None and d.probs.shape[1] == 5
    assert all(t < 5 for t in d.tokens)
    TableTarget(vocab_size=5)  # the shape the sampling check in check_lossless runs against


@pytest.mark.parametrize("runner", RUNNERS)
def test_sampling_distribution_under_strong_warping(runner: str) -> None:
    """Low temperature and top-k make the warped `q` far from the raw softmax, so a proposer that
    reported the wrong rows would be caught here (checked: reporting the unwarped softmax fails)."""
    params = SamplingParams(temperature=0.5, top_k=3, max_new_tokens=3)
    report = check_lossless(drafts_with(runner), greedy_examples=4, sampling_samples=2000, sampling_params=params, seed=1)
    assert report.samples == 2000 and report.p_value > 1e-4


def test_runner_choice() -> None:
    assert DraftModelProposer(tiny_llama(), runner="hf")._native is None
    assert DraftModelProposer(tiny_llama(), runner="auto")._native is not None  # a Llama: native
    with pytest.raises(ConfigError, match="runner"):
        DraftModelProposer(tiny_llama(), runner="fast")


def test_native_runner_out_of_slots_drafts_nothing_for_the_extra_request() -> None:
    proposer = DraftModelProposer(near_copy(), runner="native", max_slots=1)
    a, b = proposer.propose([view("a", [1, 2, 3]), view("b", [4, 5, 6])], [3, 3])
    assert a is not None and len(a.tokens) == 3 and b is None
    proposer.finish(view("a", [1, 2, 3]))
    (b,) = proposer.propose([view("b", [4, 5, 6])], [3])
    assert b is not None  # the slot came back


def test_check_lossless_on_the_native_target_backend() -> None:
    from spec_sdk import NativeBackend

    report = check_lossless(drafts_with("native"), greedy_examples=6, sampling_samples=0, make_backend=NativeBackend)
    assert report.greedy_cases == 6 and report.drafted > 0
