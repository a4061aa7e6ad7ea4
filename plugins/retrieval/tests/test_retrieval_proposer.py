"""RetrievalProposer: drafts from the corpus, options and sources, engine binding, losslessness."""

from __future__ import annotations

import random
from pathlib import Path

import anyio
import pytest

from spec_sdk.engine import SpecEngine
from spec_sdk.errors import ConfigError
from spec_sdk.proposers.base import Proposer, RequestView
from spec_sdk.proposers.registry import create
from spec_sdk.testing import check_lossless, reference_greedy, tiny_llama
from spec_sdk.types import SamplingParams, SpecStats

from spec_sdk_retrieval import RetrievalProposer
from spec_sdk_retrieval.sources import corpus_files


def view(tokens: list[int], prompt_len: int | None = None) -> RequestView:
    return RequestView("r", tokens, len(tokens) if prompt_len is None else prompt_len, SamplingParams(), SpecStats())


class CharTokenizer:
    """One id per character of `alphabet`: enough of a tokenizer for a text corpus."""

    def __init__(self, alphabet: str) -> None:
        self.alphabet = alphabet

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [self.alphabet.index(c) for c in text]


class Target:
    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size


def test_registered_under_the_entry_point() -> None:
    proposer = create("retrieval", token_ids=[[1, 2, 3]])
    assert isinstance(proposer, RetrievalProposer) and isinstance(proposer, Proposer)


@pytest.mark.parametrize(
    "options",
    [{}, {"token_ids": [[1]], "min_match": 0}, {"token_ids": [[1]], "max_match": True},
     {"token_ids": [[1]], "min_match": 5, "max_match": 4}, {"token_ids": [[1]], "min_occurrences": 0},
     {"corpus": "/no/such/path"}, {"corpus": "stdlib:no_such_module_xyz"}],
)
def test_bad_options_are_config_errors(options: dict) -> None:
    with pytest.raises(ConfigError):
        RetrievalProposer(**options)


def test_drafts_the_quoted_continuation() -> None:
    proposer = RetrievalProposer(token_ids=[list(range(10, 30))])
    (draft,) = proposer.propose([view([1, 2, 15, 16])], [4])
    assert draft is not None
    assert draft.tokens == (17, 18, 19, 20)
    assert draft.score == pytest.approx(4.0)  # one occurrence, so each node has the whole share
    assert proposer.propose([view([1, 2, 3])], [4]) == [None]  # no match
    assert proposer.propose([view([15, 16])], [0]) == [None]  # no budget


def test_tree_holds_the_top_continuations_with_their_shares() -> None:
    corpus = [[1, 2, 3, 4]] * 3 + [[1, 2, 5, 6]]
    proposer = RetrievalProposer(token_ids=corpus)
    (draft,) = proposer.propose([view([9, 1, 2])], [3])
    assert draft is not None
    assert (draft.tokens, draft.parents) == ((3, 4, 5), (-1, 0, -1))
    assert draft.score == pytest.approx(0.75 + 0.75 + 0.25)
    (chain,) = RetrievalProposer(token_ids=corpus, chain=True).propose([view([9, 1, 2])], [3])
    assert chain is not None and chain.parents is None and chain.tokens == (3, 4)  # then the documents end


def test_min_occurrences_backs_off_to_a_frequent_context() -> None:
    # "8 1" occurs once (then 7); "1" alone occurs 4 times, mostly followed by 2
    corpus = [[8, 1, 7], [1, 2], [1, 2], [1, 2]]
    (longest,) = RetrievalProposer(token_ids=corpus, chain=True).propose([view([8, 1])], [1])
    (frequent,) = RetrievalProposer(token_ids=corpus, chain=True, min_occurrences=3).propose([view([8, 1])], [1])
    assert longest is not None and longest.tokens == (7,)
    assert frequent is not None and frequent.tokens == (2,)
    assert RetrievalProposer(token_ids=corpus, min_match=2, min_occurrences=3).propose([view([8, 1])], [1]) == [None]


def test_text_corpus_is_indexed_with_the_given_tokenizer() -> None:
    tok = CharTokenizer("abcdefghijklmnopqrstuvwxyz ")
    proposer = RetrievalProposer(texts=["hello world"], tokenizer=tok, chain=True)
    (draft,) = proposer.propose([view(tok.encode("say hel"))], [4])
    assert draft is not None and draft.tokens == tuple(tok.encode("lo w"))
    stats = proposer.stats()
    assert stats is not None and stats.tokens == len("hello world")


def test_text_corpus_waits_for_the_engine_tokenizer(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("abcabd")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("xyz")
    (tmp_path / "blob.bin").write_bytes(b"\xff\xfe\x00")
    proposer = RetrievalProposer(corpus=tmp_path)
    assert proposer.stats() is None
    with pytest.raises(ConfigError):
        proposer.propose([view([0])], [2])
    with pytest.raises(ConfigError):
        proposer.bind(Target(64), None)
    tok = CharTokenizer("abcdxyz")
    proposer.bind(Target(64), tok)
    stats = proposer.stats()
    assert stats is not None and (stats.documents, stats.tokens) == (2, 9)  # the binary file is skipped
    (draft,) = proposer.propose([view(tok.encode("ab"))], [1])
    assert draft is not None and set(draft.tokens) <= {2, 3}
    with pytest.raises(ConfigError):  # the corpus uses ids the target does not have
        RetrievalProposer(corpus=tmp_path, tokenizer=tok).bind(Target(3), None)


def test_stdlib_corpus_names_module_sources() -> None:
    files = corpus_files(["stdlib:textwrap,json"], "**/*")
    names = [f.name for f in files]
    assert names[0] == "textwrap.py" and "decoder.py" in names and "__init__.py" in names
    everything = corpus_files(["stdlib:*"], "**/*")
    assert any(f.name == "textwrap.py" for f in everything)
    assert not any("test" in f.parts or "site-packages" in f.parts for f in everything)


def test_engine_runs_it_by_name_and_needs_a_corpus() -> None:
    model = tiny_llama(seed=0)
    prompt = [5, 6, 7, 8]
    ref, _ = reference_greedy(model, prompt, 12)
    corpus = [prompt + ref]  # the target's own answer, so drafts are accepted

    async def run() -> tuple[list[int], int]:
        async with SpecEngine(model, proposers={"retrieval": {"token_ids": corpus}}, num_speculative_tokens=4) as engine:
            done = await engine.generate(prompt, SamplingParams(max_new_tokens=12))
            return list(done.token_ids), engine.metrics().totals.accepted

    out, accepted = anyio.run(run)
    assert out == ref and accepted > 0
    with pytest.raises(ConfigError, match="needs a corpus"):
        SpecEngine(model, proposers=["retrieval"])


def _lossless_factory(chain: bool):  # type: ignore[no-untyped-def]
    """A corpus the target half-follows: its own greedy answers to random prompts (check_lossless's
    greedy model is tiny_llama(seed=0)), and random text, so drafts are accepted and rejected."""
    model = tiny_llama(seed=0)
    rng = random.Random(0)
    prompts = [[rng.randrange(64) for _ in range(rng.randrange(1, 12))] for _ in range(40)]
    greedy = [p + reference_greedy(model, p, 16)[0] for p in prompts]

    def make(target):  # type: ignore[no-untyped-def]
        vocab = target.vocab_size
        noise = [[rng.randrange(vocab) for _ in range(200)] for _ in range(5)]
        return RetrievalProposer(token_ids=(greedy if vocab == 64 else []) + noise, chain=chain)

    return make


def test_check_lossless_tree() -> None:
    report = check_lossless(_lossless_factory(chain=False), greedy_examples=10, sampling_samples=1500)
    assert report.drafted > 0 and report.accepted > 0 and report.proposer_errors == 0


def test_check_lossless_chain_greedy() -> None:
    report = check_lossless(_lossless_factory(chain=True), greedy_examples=6, sampling_samples=0)
    assert report.accepted > 0 and report.proposer_errors == 0
