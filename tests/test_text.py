"""Text in, text out: prompts as text, streamed deltas that join to the decoded output,
stop strings that end a request exactly at the string, and the blocking API."""

from __future__ import annotations

import anyio
import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

import spec_sdk
from spec_sdk import HFBackend, SpecEngine
from spec_sdk.testing import tiny_llama

CORPUS = [
    "Speculative decoding guesses tokens and checks them in one pass. ",
    "Le café est très chaud, déjà servi à la tête de la file. ",
    "東京は日本の首都です。猫が好きです。 ",
    "Emoji stream: 🙂🚀🎉 and more 🙂🚀. ",
    "def add(a, b):\n    return a + b\n",
] * 20


@pytest.fixture(scope="module")
def tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320, special_tokens=["</s>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="</s>")


@pytest.fixture(scope="module")
def backend(tokenizer):
    # a random model emits arbitrary byte tokens: the hardest case for streaming text
    return HFBackend(tiny_llama(vocab_size=len(tokenizer), seed=1))


@pytest.mark.anyio
async def test_stream_text_deltas_join_to_decoded_output(tokenizer, backend):
    async with SpecEngine(backend, tokenizer=tokenizer, proposers=["ngram"]) as engine:
        for prompt in ["Le café", "東京は", "Emoji 🙂", "def add"]:
            parts, ids = [], []
            async for chunk in engine.stream(prompt, max_new_tokens=40):
                parts.append(chunk.text)
                ids.extend(chunk.token_ids)
                assert "\ufffd" not in chunk.text or "\ufffd" in tokenizer.decode(ids)
            full = tokenizer.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
            assert "".join(parts) == full


@pytest.mark.anyio
async def test_stop_string_ends_request_exactly(tokenizer, backend):
    async with SpecEngine(backend, tokenizer=tokenizer, proposers=["ngram"]) as engine:
        base = await engine.generate("The café", max_new_tokens=40)
        assert base.text is not None and len(base.text) > 6
        stop = base.text[3:6]
        cut = base.text.index(stop)
        stopped = await engine.generate("The café", max_new_tokens=40, stop=[stop])
    assert stopped.finish_reason == "stop"
    assert stopped.text == base.text[:cut]
    # the request ends at the token that completed the stop string, not later
    ids = list(stopped.token_ids)
    assert ids == list(base.token_ids[: len(ids)])
    assert stop in tokenizer.decode(ids) and stop not in tokenizer.decode(ids[:-1])


def test_blocking_generate_matches_engine(tokenizer, backend):
    done = spec_sdk.generate(backend, "Emoji 🙂", tokenizer=tokenizer, proposers=["ngram"], max_new_tokens=12)

    async def via_engine():
        async with SpecEngine(backend, tokenizer=tokenizer) as engine:
            return await engine.generate("Emoji 🙂", max_new_tokens=12)

    assert done.token_ids == anyio.run(via_engine).token_ids
    assert done.text == tokenizer.decode(done.token_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
