"""The `spec-sdk` command on the committed tiny zoo: bench, generate and demo really run."""

from __future__ import annotations

import json

from spec_sdk.cli import main
from spec_sdk.zoo.build import default_model_dir

TINY = str(default_model_dir("tiny"))


def test_bench_reports_speculation_on_repetitive_prompts(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main([
        "bench", "--model", TINY, "--prompts", "benchmarks/prompts/repetitive.jsonl",
        "--limit", "6", "--max-new-tokens", "32", "--json", str(out),
    ])
    assert code == 0
    report = json.loads(out.read_text())
    base, ngram = report["methods"]["target-only"], report["methods"]["ngram k=4"]
    assert base["mean_accepted_length"] == 1.0
    assert ngram["all_outputs_equal"] and ngram["mean_accepted_length"] > 1.5
    assert set(ngram["time_split"]) == {"propose", "score", "verify", "bookkeeping"}
    assert "ngram k=4" in capsys.readouterr().out


def test_generate_streams_text(capsys):
    assert main(["generate", "def add(a, b):", "--model", TINY, "--max-new-tokens", "16"]) == 0
    captured = capsys.readouterr()
    assert captured.out.strip() and "MAL" in captured.err


def test_demo_runs_and_matches_target_only(capsys):
    assert main(["demo", "--model", TINY, "--max-new-tokens", "24"]) == 0
    assert "outputs identical: True" in capsys.readouterr().out
