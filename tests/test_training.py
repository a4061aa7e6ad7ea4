"""Speculator distillation: the `train-speculator` command on the tiny zoo (fast enough for CI,
and better than a unigram guesser on held-out positions), determinism and resume."""

from __future__ import annotations

import json
import time

import pytest
import torch

from spec_sdk.cli import main
from spec_sdk.proposers.speculator import lstm_speculator, mlp_speculator
from spec_sdk.speculators import load_speculator
from spec_sdk.testing import tiny_llama
from spec_sdk.training import recipe
from spec_sdk.training.data import Rollouts, build_rollouts
from spec_sdk.training.evaluate import baselines
from spec_sdk.training.loop import train
from spec_sdk.training.run import speculator_for

torch.set_num_threads(1)


def test_train_speculator_on_the_tiny_zoo(tmp_path) -> None:
    """Both archs through the CLI, sharing one rollout cache; each run well under two minutes."""
    work = tmp_path / "work"
    for arch in ("mlp", "lstm"):
        out = tmp_path / arch
        started = time.perf_counter()
        assert main(["train-speculator", "--target", "tiny", "--arch", arch, "--out", str(out),
                     "--work", str(work), "--quiet"]) == 0
        seconds = time.perf_counter() - started
        assert seconds < 120, f"{arch}: {seconds:.0f}s"
        report = json.loads((out / "train.json").read_text())
        heads = report["heldout"]["head_accuracy"]
        assert heads[0] > report["baselines_head0"]["unigram"] + 0.2, report
        assert report["heldout"]["accepted_mean"] > 0.5
        spec = load_speculator(out)
        assert spec.n_predict == len(heads) == 4
    # Both proposers find their checkpoints beside a target directory.
    (tmp_path / "target").mkdir()
    assert mlp_speculator(tmp_path / "target").speculator.input_dim == 128
    assert lstm_speculator(tmp_path).speculator.config.method == "sum_lstm"


def test_distill_draft_on_the_tiny_zoo_moves_the_draft_towards_the_target(tmp_path) -> None:
    """The CLI on the tiny zoo: the distilled draft agrees with the target's greedy token more
    often than the draft it started from, loads as a model directory and keeps its dtype."""
    from transformers import AutoModelForCausalLM

    from spec_sdk.zoo.build import resolve

    out = tmp_path / "draft"
    started = time.perf_counter()
    assert main(["distill-draft", "--target", "tiny", "--out", str(out), "--work", str(tmp_path / "work"),
                 "--quiet"]) == 0
    assert time.perf_counter() - started < 120
    report = json.loads((out / "distill.json").read_text())
    assert report["heldout_agreement_after"] > report["heldout_agreement_before"] + 0.05, report
    assert report["last_loss"] < report["first_loss"]
    before = json.loads((resolve("tiny", "draft") / "config.json").read_text())
    after = json.loads((out / "config.json").read_text())
    assert after["dtype"] == before["dtype"] and after["num_hidden_layers"] == before["num_hidden_layers"]
    assert (out / "tokenizer.json").exists()
    AutoModelForCausalLM.from_pretrained(str(out))
    # a target that is not a zoo has no draft to default to
    from spec_sdk.errors import ConfigError

    with pytest.raises(ConfigError):
        main(["distill-draft", "--target", str(resolve("tiny", "target")), "--out", str(tmp_path / "x"), "--quiet"])


def _synthetic(n: int = 24, length: int = 20, hidden: int = 16, vocab: int = 32, seed: int = 0) -> Rollouts:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, vocab, (n, length), generator=g, dtype=torch.int32)
    states = torch.randn(n, length, hidden, generator=g).to(torch.bfloat16)
    return Rollouts(tokens, states, torch.zeros(n, dtype=torch.bool), prompt_len=8)


@pytest.mark.parametrize("arch, labels", [("mlp", "soft"), ("lstm", "hard")])
def test_training_is_deterministic_and_resumes_to_the_same_bits(arch, labels, tmp_path) -> None:
    data = _synthetic()
    config = recipe("tiny", arch=arch, labels=labels, inner_dim=16, n_predict=3, prompt_len=8, gen_len=12,
                    steps=12, batch_size=4, warmup=2, checkpoint_every=5)
    lm_head = torch.randn(32, 16, generator=torch.Generator().manual_seed(9))

    def fresh():
        return speculator_for(config, 16, 32, None)

    whole = train(fresh(), data, config, tmp_path / "a", lm_head, progress=False)
    again = train(fresh(), data, config, tmp_path / "b", lm_head, progress=False)
    train(fresh(), data, config, tmp_path / "c", lm_head, progress=False, stop_at=7)  # "interrupted" after step 7
    resumed = train(fresh(), data, config, tmp_path / "c", lm_head, progress=False)
    for (name, a), (_, b), (_, c) in zip(whole.state_dict().items(), again.state_dict().items(),
                                         resumed.state_dict().items()):
        assert torch.equal(a, b) and torch.equal(a, c), name


def test_rollouts_are_deterministic_and_cached(tmp_path) -> None:
    model = tiny_llama()
    chunks = torch.randint(0, 64, (10, 5), generator=torch.Generator().manual_seed(0), dtype=torch.int32)
    config = recipe("tiny", prompt_len=5, gen_len=7, rollout_batch=4, sample_share=0.5)
    a = build_rollouts(model, chunks, config, tmp_path / "a", "k", progress=False)
    b = build_rollouts(model, chunks, config, tmp_path / "b", "k", progress=False)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.hidden, b.hidden)
    assert int(a.sampled.sum()) == 5 and a.tokens.shape == (10, 12) and a.hidden.shape == (10, 12, 32)
    assert torch.equal(a.tokens[:, :5], chunks)
    cached = build_rollouts(None, chunks, config, tmp_path / "a", "k", progress=False)  # no model needed now
    assert torch.equal(cached.tokens, a.tokens)


def test_baselines_score_the_same_positions() -> None:
    data = _synthetic(n=6, length=14)
    data.tokens[:, 1:] = 7  # every label is 7: the unigram guesser is always right
    assert baselines(data, data, 3, use_prompt=True)["unigram"] == 1.0
    assert baselines(data, data, 3, use_prompt=False)["bigram"] == 1.0
