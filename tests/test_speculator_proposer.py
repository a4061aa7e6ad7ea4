"""The speculator proposers: lossless through the real engine (greedy and sampled, both archs,
both drafting modes), hidden states reach them at the right positions, and they are found by name."""

from __future__ import annotations

import anyio
import pytest
import torch

from spec_sdk import HFBackend, SamplingParams, SpecEngine
from spec_sdk.errors import ConfigError
from spec_sdk.proposers import registry
from spec_sdk.proposers.base import RequestView
from spec_sdk.proposers.speculator import SpeculatorProposer, lstm_speculator, mlp_speculator
from spec_sdk.speculators import LSTMSpeculatorConfig, MLPSpeculatorConfig, build, save_speculator
from spec_sdk.testing import (
    OracleProposer,
    check_lossless,
    greedy_next_fn,
    reference_greedy,
    run_concurrently,
    tie_aware_equal,
    tiny_llama,
)
from spec_sdk.types import SpecStats

torch.set_num_threads(1)


def _config(arch: str, hidden: int, vocab: int, n: int = 3):
    if arch == "mlp":
        return MLPSpeculatorConfig(emb_dim=hidden, vocab_size=vocab, n_predict=n, inner_dim=16)
    return LSTMSpeculatorConfig(input_hidden_dim=hidden, vocab_size=vocab, n_predict=n, inner_dim=16)


def _factory(arch: str, drafting: str = "greedy", narrower: int = 0):
    def make(target):
        spec = build(_config(arch, target.hidden_size, target.vocab_size - narrower), seed=1)
        return SpeculatorProposer(spec, name=f"{arch}_speculator", drafting=drafting)
    return make


@pytest.mark.parametrize("arch", ["mlp", "lstm"])
@pytest.mark.parametrize("drafting", ["greedy", "sample"])
def test_check_lossless(arch, drafting) -> None:
    """Greedy tie-aware equality on the float64 tiny Llama (hypothesis), and the exact sequence
    distribution under sampling on the table target (chi-square)."""
    report = check_lossless(_factory(arch, drafting), k=4, greedy_examples=8, sampling_samples=1500)
    assert report.drafted > 0 and report.accepted > 0 and report.proposer_errors == 0


def test_check_lossless_with_a_narrower_speculator_vocabulary() -> None:
    """A speculator that predicts fewer ids than the target has: sampled drafts' `probs` rows are
    padded to the target's width with zero mass."""
    report = check_lossless(_factory("mlp", "sample", narrower=1), k=3, greedy_examples=4, sampling_samples=1500)
    assert report.accepted > 0 and report.proposer_errors == 0


def _view(tokens, params=SamplingParams(), rid="r") -> RequestView:
    return RequestView(rid, tokens, len(tokens), params, SpecStats())


def test_no_draft_before_the_first_hidden_state_nor_after_a_missed_observe() -> None:
    proposer = SpeculatorProposer(build(_config("mlp", 8, 20, n=4)))
    tokens = [1, 2, 3]
    view = _view(tokens)
    proposer.start(view)
    assert proposer.propose([view], [4]) == [None]  # just prefilled: no hidden state yet
    proposer.observe(view, [3], torch.randn(1, 8))
    short, long = proposer.propose([view, view], [2, 9])
    assert len(short) == 2 and len(long) == 4  # the budget, capped at n_predict
    assert short.tokens == long.tokens[:2] and short.probs is None
    assert 0 < short.score <= 2 and short.score <= long.score <= 4
    tokens.append(5)  # the request moved on without an observe: the stored state is stale
    assert proposer.propose([view], [4]) == [None]
    proposer.finish(view)
    assert proposer.propose([view], [4]) == [None]


def test_another_targets_speculator_is_a_clear_error(tiny_model) -> None:
    proposer = SpeculatorProposer(build(_config("lstm", 8, 20)))
    with pytest.raises(ConfigError, match="hidden size is 12"):
        proposer.observe(_view([1, 2]), [2], torch.randn(2, 12))  # an engine that does not bind
    with pytest.raises(ConfigError, match="hidden size is 32"):
        SpecEngine(HFBackend(tiny_model), proposers=[proposer])
    wide = SpeculatorProposer(build(_config("mlp", 32, 80)))
    with pytest.raises(ConfigError, match="80 token ids"):
        SpecEngine(HFBackend(tiny_model), proposers=[wide])


class _Recording(SpeculatorProposer):
    """Notes, at every propose, each ready request's tokens and the hidden state it would draft from."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.seen: list[tuple[list[int], torch.Tensor]] = []

    def propose(self, reqs, budgets):
        for req in reqs:
            stored = self._hidden.get(req.id)
            if stored is not None and stored[1] == len(req.tokens):
                self.seen.append((list(req.tokens), stored[0].clone()))
        return super().propose(reqs, budgets)


@pytest.mark.parametrize("k", [1, 4])
def test_drafts_from_the_state_that_predicted_the_newest_token(k, tiny_model) -> None:
    """Whatever was accepted, the proposer drafts from the hidden state at the position before the
    newest token (the one that predicted it), as a plain full forward computes it."""
    spec = build(_config("mlp", 32, 64, n=4), seed=2)
    proposer = _Recording(spec)
    oracle = OracleProposer(greedy_next_fn(tiny_model), max_len=2)  # gets some drafts accepted
    g = torch.Generator().manual_seed(3)
    prompts = [torch.randint(0, 64, (n,), generator=g).tolist() for n in (2, 5, 9, 3, 7)]
    params = [SamplingParams(max_new_tokens=20)] * len(prompts)
    policy = _Alternate(k)
    done, metrics = anyio.run(run_concurrently, HFBackend(tiny_model), [proposer, oracle], prompts, params, k, policy)
    assert metrics.totals.accepted > 0 and len(proposer.seen) >= 8
    for tokens, hidden in proposer.seen:
        with torch.no_grad():
            out = tiny_model(input_ids=torch.tensor([tokens[:-1]]), output_hidden_states=True)
        torch.testing.assert_close(hidden, out.hidden_states[-1][0, -1], rtol=0, atol=1e-9)


class _Alternate:
    """The speculator (budget k) when the length is a multiple of 3, else the oracle (1 or 2 tokens,
    all accepted), so the speculator observes after accepted drafts of several lengths and
    after rejected ones."""

    def __init__(self, k: int) -> None:
        self.k = k

    def plan(self, req, load):
        n = len(req.tokens)
        return {"speculator": self.k} if n % 3 == 0 else {"oracle": 1 + n % 2}

    def choose(self, req, drafts):
        return next(iter(drafts.values()), None)


def test_found_by_name_and_by_vllm_config(tmp_path) -> None:
    target = tiny_llama()
    (tmp_path / "target").mkdir()
    target.save_pretrained(str(tmp_path / "target"))
    save_speculator(build(_config("mlp", 32, 64)), tmp_path / "mlp")
    save_speculator(build(_config("lstm", 32, 64)), tmp_path / "lstm")
    assert {"mlp_speculator", "lstm_speculator"} <= set(registry.available())
    assert registry.create("mlp_speculator", speculator=tmp_path / "target").speculator.config.inner_dim == 16
    assert isinstance(registry.create("lstm_speculator", speculator=str(tmp_path)).speculator.config, LSTMSpeculatorConfig)
    assert lstm_speculator(model=tmp_path / "lstm").name == "lstm_speculator"
    with pytest.raises(ConfigError):
        mlp_speculator(tmp_path / "no" / "such-dir")
    with pytest.raises(ConfigError, match="drafting"):
        mlp_speculator(tmp_path / "mlp", drafting="beam")

    async def generate() -> tuple[int, ...]:
        config = {"method": "mlp_speculator", "model": str(tmp_path / "mlp"), "num_speculative_tokens": 3}
        async with SpecEngine(HFBackend(target), speculative_config=config) as engine:
            return (await engine.generate([1, 2, 3, 4], SamplingParams(max_new_tokens=8))).token_ids

    assert list(anyio.run(generate)) == reference_greedy(target, [1, 2, 3, 4], 8)[0]


@pytest.mark.parametrize("name", ["mlp_speculator", "lstm_speculator"])
def test_committed_zoo_speculators_are_accepted(name) -> None:
    """The tiny zoo's committed speculators, found by name beside their target, draft tokens the
    target accepts, and the output is still the target's own greedy output."""
    from spec_sdk.zoo import load

    model, tokenizer = load("tiny")
    texts = ["def add(a, b):\n    return", "<|user|>\nHow do I sort a list in Python?\n<|assistant|>\n",
             "import os\nimport sys\n\n\ndef main():\n"]
    prompts = [tokenizer(t)["input_ids"] for t in texts]
    params = [SamplingParams(max_new_tokens=32, ignore_eos=True)] * len(prompts)
    proposer = registry.create(name, speculator="tiny")
    done, metrics = anyio.run(run_concurrently, HFBackend(model), [proposer], prompts, params, 4)
    for prompt, completion in zip(prompts, done):
        ref, margins = reference_greedy(model, prompt, 32)
        assert tie_aware_equal(list(completion.token_ids), ref, margins, eps=1e-4)
    assert metrics.totals.accepted / metrics.totals.drafted > 0.3, metrics.totals
