"""The workload bench on the committed tiny zoo: workloads, HF baselines, report, plot."""

from __future__ import annotations

import json

import pytest

from spec_sdk.bench import sdk_methods, tie_aware_same
from spec_sdk.cli import main
from spec_sdk.hf_baselines import HFMode, generate_kwargs, hf_generate
from spec_sdk.proposers import registry
from spec_sdk.proposers.ngram import NgramProposer
from spec_sdk.types import SamplingParams
from spec_sdk.workloads import load_workload
from spec_sdk.zoo.build import default_model_dir, load

TINY = str(default_model_dir("tiny"))
SDK = ("target-only", "ngram k=4", "adaptive")  # adaptive: over ngram, the one proposer given
HF = ("hf-plain", "hf-assisted", "hf-prompt-lookup")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def tiny():
    return load("tiny")


def test_workloads_are_fixed_and_fit_the_context(tiny):
    model, tok = tiny
    for name in ("chat", "code", "agentic"):
        first = load_workload(name, tok, n=3, max_new_tokens=8, context=256, model=model)
        again = load_workload(name, tok, n=3, max_new_tokens=8, context=256, model=model)
        assert first == again and len(first) == 3
        assert all(p[0] == tok.bos_token_id and len(p) <= 256 - 8 for p in first)
    assert load_workload("chat", tok, n=3, seed=1, max_new_tokens=8, context=256) != load_workload(
        "chat", tok, n=3, max_new_tokens=8, context=256)
    # a refine session: each later prompt carries the earlier one's text, so text repeats
    session = load_workload("agentic", tok, n=3, max_new_tokens=8, context=512, model=model)
    assert tok.decode(session[0][1:]) in tok.decode(session[1]) and len(session[2]) > len(session[1])
    with pytest.raises(ValueError, match="agentic"):
        load_workload("agentic", tok, n=3)


def test_hf_kwargs_mirror_sampling_params():
    greedy = generate_kwargs(SamplingParams(max_new_tokens=5), (2,), 0)
    assert greedy == {"max_new_tokens": 5, "eos_token_id": [2], "pad_token_id": 0, "do_sample": False}
    sampled = generate_kwargs(SamplingParams(temperature=0.8, seed=3), (2,), 0)
    # top_k=None would be replaced by transformers' default of 50
    assert sampled["do_sample"] and sampled["temperature"] == 0.8 and sampled["top_k"] == 0


def test_hf_generate_stops_like_the_engine(tiny):
    model, tok = tiny
    prompt = tok("def add(a, b):\n")["input_ids"]
    out = hf_generate(model, prompt, SamplingParams(max_new_tokens=6), (2,), HFMode("hf-plain"))
    assert 1 <= len(out) <= 6 and (len(out) == 6 or out[-1] == 2)
    lookup = hf_generate(model, prompt, SamplingParams(max_new_tokens=6), (2,), HFMode("x", {"prompt_lookup_num_tokens": 3}))
    assert tie_aware_same(model, prompt, lookup, out)


def test_tie_aware_same_needs_a_near_tie(tiny):
    model, tok = tiny
    prompt = tok("import os\n")["input_ids"]
    ref = hf_generate(model, prompt, SamplingParams(max_new_tokens=4), (2,), HFMode("hf-plain"))
    assert tie_aware_same(model, prompt, ref, ref)
    wrong = [(ref[0] + 1) % 512, *ref[1:]]
    assert not tie_aware_same(model, prompt, wrong, ref)


def test_proposers_needing_what_the_bench_lacks_are_skipped():
    registry.register("_needs_thing", lambda *, thing: NgramProposer())
    registry.register("_needs_draft", lambda *, draft: NgramProposer())
    try:
        methods, skipped = sdk_methods(["ngram", "_needs_thing", "_needs_draft"], 3, draft=object())
        assert [m.name for m in methods] == ["ngram k=3", "_needs_draft k=3"]
        assert "thing" in skipped["_needs_thing"]
        _, skipped = sdk_methods(["_needs_draft"], 3, draft=None)
        assert "draft" in skipped["_needs_draft"]
    finally:
        registry._local.pop("_needs_thing", None)
        registry._local.pop("_needs_draft", None)


def test_workload_bench_end_to_end(tmp_path, capsys):
    out, png = tmp_path / "bench.json", tmp_path / "bench.png"
    code = main(["bench", "--model", TINY, "--proposer", "ngram", "--n", "2", "--max-new-tokens", "8",
                 "--json", str(out), "--plot", str(png)])
    assert code == 0
    report = json.loads(out.read_text())
    assert report["draft"] and report["draft"].endswith("draft")
    assert list(report["workloads"]) == ["code", "chat", "agentic"]
    for wname, w in report["workloads"].items():
        assert w["prompts"] == 2 and w["max_new_tokens"] == 8 and w["samples"]
        assert list(w["runs"]) == ["t=0", "t=0.8"]
        for run in w["runs"].values():
            methods = run["methods"]
            assert list(methods) == [*SDK, *HF]
            assert run["best_hf"] in HF
            # every method, ours and HF's, was fed exactly the workload's prompt ids
            assert {m["prompts_digest"] for m in methods.values()} == {w["prompts_digest"]}
            for name, m in methods.items():
                assert m["kind"] == ("hf" if name in HF else "sdk")
                assert 2 <= m["tokens"] <= 16 and m["tokens_per_second"] > 0 and m["mean_accepted_length"] >= 1
                assert m["speedup_vs_best_hf"] > 0
            assert methods["target-only"]["speedup"] == 1.0
            assert set(methods["ngram k=4"]["time_split"]) == {"propose", "score", "verify", "bookkeeping"}
            assert isinstance(methods["ngram k=4"]["acceptance_by_position"], list)
            # what the adaptive policy decided comes with its figures; a fixed method has no report
            decided = methods["adaptive"]["policy"]
            assert decided["steps"] >= 1 and set(decided["chosen"]) <= {"ngram"}
            assert "policy" not in methods["ngram k=4"]
            # the bar, computed: the one single (proposer, k) here is the best single
            assert run["best_single"] == "ngram k=4"
            assert run["adaptive_vs_best_single"] == pytest.approx(
                methods["adaptive"]["tokens_per_second"] / methods["ngram k=4"]["tokens_per_second"])
            if run["greedy"]:
                for name in (*SDK, "hf-plain"):
                    assert methods[name]["all_outputs_equal"], (wname, name, methods[name]["outputs_equal"])
            else:
                assert all(m["outputs_equal"] == "n/a" for m in methods.values())
                # keyed draws: n-gram drafts (the adaptive policy here has only n-gram) write
                # target-only's own sampled text, token for token
                for name in ("ngram k=4", "adaptive"):
                    assert methods[name]["same_text_as_target_only"] == "2/2", (wname, name)
    assert png.read_bytes()[:8] == PNG_MAGIC and png.stat().st_size > 10_000
    printed = capsys.readouterr().out
    assert "hf-prompt-lookup" in printed and "adaptive / best single (ngram k=4)" in printed


def test_best_single_is_the_fastest_single_and_the_adaptive_ratio_to_it():
    from spec_sdk.bench import best_single

    entries = {"target-only": {"tokens_per_second": 10.0}, "suffix k=4": {"tokens_per_second": 20.0},
               "suffix k=8": {"tokens_per_second": 25.0}, "cascade a>b k=4": {"tokens_per_second": 40.0},
               "adaptive": {"tokens_per_second": 24.0}}
    got = best_single(entries, ["suffix k=4", "suffix k=8", "draft_model k=4"])
    assert got == {"best_single": "suffix k=8", "adaptive_vs_best_single": pytest.approx(0.96)}
    assert best_single({k: v for k, v in entries.items() if k != "adaptive"}, ["suffix k=4"]) == {}
