"""The model zoo: data hygiene, tokenizer, deterministic and resumable training, the tiny build."""

from __future__ import annotations

import json
from pathlib import Path

import attrs
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from spec_sdk.zoo import chat_prompt, data, load, read_manifest
from spec_sdk.zoo.build import build
from spec_sdk.zoo.chat import SPECIAL_TOKENS, Turn, render_chat
from spec_sdk.zoo.tokenizer import train_tokenizer
from spec_sdk.zoo.train import CKPT_NAME, train_model
from spec_sdk.zoo.variants import VARIANTS

TINY = VARIANTS["tiny"]


@pytest.fixture(scope="module")
def tiny_zoo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build("tiny", tmp_path_factory.mktemp("zoo") / "tiny", progress=False)


def test_tiny_build_layout_and_manifest(tiny_zoo: Path) -> None:
    assert not (tiny_zoo / ".build").exists()  # checkpoints and caches are cleaned up
    manifest = read_manifest(tiny_zoo)
    assert manifest["variant"] == "tiny" and manifest["seed"] == TINY.seed
    assert manifest["data"]["humaneval_in_training"] is False
    assert manifest["data"]["train_tokens"] > 0
    for role in ("target", "draft"):
        assert (tiny_zoo / role / "model.safetensors").exists()
        assert (tiny_zoo / role / "tokenizer.json").exists()
        loss = manifest["models"][role]["heldout_loss"]
        assert 0 < loss < 6.0  # below ln(512) = 6.24, the loss of a uniform guess
    assert manifest["models"]["draft"]["params"] < manifest["models"]["target"]["params"]


def test_reloads_through_auto_classes(tiny_zoo: Path) -> None:
    model = AutoModelForCausalLM.from_pretrained(tiny_zoo / "target")
    tok = AutoTokenizer.from_pretrained(tiny_zoo / "target")
    assert model.config.model_type == "llama"
    assert next(model.parameters()).dtype == torch.bfloat16  # stored in bf16
    assert model.config.vocab_size == len(tok) == TINY.vocab_size
    assert (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id) == (1, 2, 0)
    ids = tok(chat_prompt("How do I sort a list in Python?"), return_tensors="pt")["input_ids"]
    assert ids[0, 0].item() == tok.bos_token_id
    out = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert out.shape[1] > ids.shape[1]
    # The zoo's own loader goes the same way and upcasts.
    draft, draft_tok = load(tiny_zoo, role="draft")
    assert next(draft.parameters()).dtype == torch.float32 and not draft.training
    assert draft_tok.get_vocab() == tok.get_vocab()


def test_rebuild_with_resume_is_a_no_op(tiny_zoo: Path) -> None:
    before = (tiny_zoo / "target" / "model.safetensors").stat().st_mtime_ns
    assert build("tiny", tiny_zoo, progress=False) == tiny_zoo
    assert (tiny_zoo / "target" / "model.safetensors").stat().st_mtime_ns == before


def _blocks(n: int = 32) -> torch.Tensor:
    gen = torch.Generator().manual_seed(123)
    return torch.randint(0, TINY.vocab_size, (n, TINY.context), generator=gen, dtype=torch.int32)


def _short_spec(steps: int):  # type: ignore[no-untyped-def]
    return attrs.evolve(TINY.target, steps=steps, warmup=2, checkpoint_every=100)


def test_training_is_deterministic(tmp_path: Path) -> None:
    config = TINY.target.llama_config(TINY.vocab_size, TINY.context)
    a = train_model(config, _short_spec(3), _blocks(), tmp_path / "a", seed=7, progress=False)
    b = train_model(config, _short_spec(3), _blocks(), tmp_path / "b", seed=7, progress=False)
    c = train_model(config, _short_spec(3), _blocks(), tmp_path / "c", seed=8, progress=False)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_resume_matches_uninterrupted_run(tmp_path: Path) -> None:
    config = TINY.target.llama_config(TINY.vocab_size, TINY.context)
    spec = _short_spec(4)
    straight = train_model(config, spec, _blocks(), tmp_path / "straight", seed=0, progress=False)
    train_model(config, spec, _blocks(), tmp_path / "resumed", seed=0, stop_at=2, progress=False)
    assert torch.load(tmp_path / "resumed" / CKPT_NAME, weights_only=True)["step"] == 2
    resumed = train_model(config, spec, _blocks(), tmp_path / "resumed", seed=0, progress=False)
    s1, s2 = straight.state_dict(), resumed.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)


def test_checkpoint_of_another_run_is_not_resumed(tmp_path: Path) -> None:
    config = TINY.target.llama_config(TINY.vocab_size, TINY.context)
    train_model(config, _short_spec(4), _blocks(), tmp_path / "w", seed=0, stop_at=2, progress=False)
    fresh = train_model(config, _short_spec(4), _blocks(), tmp_path / "fresh", seed=1, progress=False)
    other = train_model(config, _short_spec(4), _blocks(), tmp_path / "w", seed=1, progress=False)
    s1, s2 = fresh.state_dict(), other.state_dict()
    assert all(torch.equal(s1[k], s2[k]) for k in s1)


def test_humaneval_prompts_are_kept_out_of_training() -> None:
    prompts = data.load_humaneval_prompts()
    assert len(prompts) == 164
    corpus = data.build_corpus(TINY.seed, TINY.chat_chars, TINY.code_chars, TINY.heldout_chars)
    train_text = "\n".join(d.text for d in corpus.train)
    for p in data.load_humaneval():
        assert p["prompt"].strip() not in train_text
        for sig in data.humaneval_signatures()[p["entry_point"]]:
            assert sig not in train_text
    # The filter itself catches a prompt pasted into a conversation.
    assert data.is_contaminated("Please fix this:\n" + prompts[3] + "    pass\n")
    assert not data.is_contaminated("def helper(x):\n    return x\n")


def test_corpus_is_deterministic_and_split() -> None:
    a = data.build_corpus(0, 50_000, 50_000, 20_000)
    b = data.build_corpus(0, 50_000, 50_000, 20_000)
    assert a == b
    assert {d.key for d in a.train}.isdisjoint({d.key for d in a.heldout})
    assert {d.source for d in a.train} == {"chat", "code"}
    assert all(d.text.endswith("</s>") for d in a.train)


def test_decode_json_array_prefix_drops_the_broken_tail() -> None:
    records = [{"id": "a", "x": [1, 2]}, {"id": "b", "x": "]}"}]
    text = json.dumps(records, indent=2)
    assert data.decode_json_array_prefix(text) == records
    assert data.decode_json_array_prefix(text[:-15]) == records[:1]


def test_chat_workload_is_held_out_and_seeded() -> None:
    first = data.load_sharegpt_first_turns(n=20, seed=1)
    assert len(first) == 20 and first == data.load_sharegpt_first_turns(n=20, seed=1)
    train_firsts = {t[0].content for _, t in data.sharegpt_conversations("train")}
    assert not set(first) & train_firsts


def test_tokenizer_round_trips_text(tiny_zoo: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_zoo / "target")
    texts = [
        "héllo wörld — naïve café",
        "日本語のテキスト、中文、한국어 🚀🎉 👩‍💻",
        "def f(x):\n\tif x:\n        return {'a': [1, 2]}  # trailing  \n\n",
        "   leading spaces and \r\n windows newlines",
    ]
    for text in texts:
        ids = tok(text)["input_ids"]
        assert ids[0] == tok.bos_token_id
        assert tok.decode(ids, skip_special_tokens=True) == text
    assert [tok.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS] == list(range(len(SPECIAL_TOKENS)))


def test_chat_template_matches_render_chat(tiny_zoo: Path) -> None:
    tok = AutoTokenizer.from_pretrained(tiny_zoo / "target")
    turns = [Turn("user", "Hi"), Turn("assistant", "Hello!"), Turn("user", "Sort [3, 1]?")]
    messages = [{"role": t.role, "content": t.content} for t in turns]
    via_template = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if not isinstance(via_template, list):
        via_template = via_template["input_ids"]
    assert via_template == tok(render_chat(turns, add_generation_prompt=True))["input_ids"]
    assert render_chat(turns, document=True).endswith("Hello!</s>")


def test_tokenizer_training_is_deterministic() -> None:
    texts = ["the quick brown fox jumps over the lazy dog %d\n" % i for i in range(300)]
    a = train_tokenizer(texts, 300).backend_tokenizer.to_str()
    b = train_tokenizer(texts, 300).backend_tokenizer.to_str()
    assert a == b


def test_bf16_autocast_follows_the_cpu_unless_forced(monkeypatch: pytest.MonkeyPatch) -> None:
    from spec_sdk.zoo import precision

    try:
        for value, expected in (("1", True), ("0", False), ("no", False)):
            monkeypatch.setenv(precision.ENV, value)
            precision.bf16_autocast.cache_clear()
            assert precision.bf16_autocast() is expected
        monkeypatch.delenv(precision.ENV)
        precision.bf16_autocast.cache_clear()
        # unforced: what oneDNN says of this CPU's bf16 support
        assert precision.bf16_autocast() is bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    finally:
        precision.bf16_autocast.cache_clear()
