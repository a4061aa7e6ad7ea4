"""The zoo's variants: how big each model is, how much data it sees, how long it trains.

`tiny` builds in seconds for tests. `full` is the committed zoo: a Llama-architecture target of
about 12.6M parameters and a draft of 0.9M (under 1/8 of it), sized so the whole build fits in ~45 min
on a 2-core CPU (bf16 autocast where the CPU has bf16 units: spec_sdk.zoo.precision).
"""

from __future__ import annotations

import attrs
from transformers import LlamaConfig

from spec_sdk.zoo.chat import SPECIAL_TOKENS

PAD_ID, BOS_ID, EOS_ID = (SPECIAL_TOKENS.index(t) for t in ("<pad>", "<s>", "</s>"))


@attrs.frozen
class ModelSpec:
    hidden: int
    layers: int
    heads: int
    kv_heads: int
    intermediate: int
    # Small models are dominated by the embedding; tying it to the LM head halves that cost,
    # which is what lets the draft stay under 1/8 of the target.
    tie_embeddings: bool
    steps: int
    batch_size: int
    lr: float
    warmup: int
    checkpoint_every: int

    def llama_config(self, vocab_size: int, context: int) -> LlamaConfig:
        return LlamaConfig(
            vocab_size=vocab_size,
            hidden_size=self.hidden,
            intermediate_size=self.intermediate,
            num_hidden_layers=self.layers,
            num_attention_heads=self.heads,
            num_key_value_heads=self.kv_heads,
            max_position_embeddings=context,
            tie_word_embeddings=self.tie_embeddings,
            pad_token_id=PAD_ID,
            bos_token_id=BOS_ID,
            eos_token_id=EOS_ID,
        )


@attrs.frozen
class Variant:
    name: str
    seed: int
    vocab_size: int
    context: int
    chat_chars: int  # ShareGPT training text, in characters
    code_chars: int  # stdlib training text, in characters
    heldout_chars: int  # held-out text (half chat, half code) before the eval cap
    tokenizer_chars: int  # how much of the training text the BPE trainer reads
    eval_blocks: int  # held-out blocks evaluated per source
    target: ModelSpec
    draft: ModelSpec


VARIANTS: dict[str, Variant] = {
    v.name: v
    for v in (
        Variant(
            name="tiny",
            seed=0,
            vocab_size=512,
            context=256,
            chat_chars=1_000_000,
            code_chars=500_000,
            heldout_chars=60_000,
            tokenizer_chars=450_000,
            eval_blocks=16,
            # Weak, but its greedy output is varied text rather than one repeated token, which
            # keeps speculative-decoding tests honest; builds in ~20 s on an idle 2-core CPU.
            target=ModelSpec(128, 2, 4, 2, 352, False, steps=300, batch_size=8, lr=3e-3, warmup=20, checkpoint_every=100),
            draft=ModelSpec(64, 1, 2, 1, 176, True, steps=300, batch_size=8, lr=3e-3, warmup=20, checkpoint_every=100),
        ),
        Variant(
            name="full",
            seed=0,
            vocab_size=4096,
            context=512,
            chat_chars=22_000_000,
            code_chars=9_000_000,
            heldout_chars=800_000,
            tokenizer_chars=6_000_000,
            eval_blocks=32,
            # Head size 64 throughout; wide-and-shallow trains faster per parameter on CPU.
            target=ModelSpec(384, 6, 6, 2, 1024, False, steps=2200, batch_size=8, lr=1.5e-3, warmup=100, checkpoint_every=100),
            draft=ModelSpec(128, 2, 2, 1, 384, True, steps=2000, batch_size=8, lr=3e-3, warmup=100, checkpoint_every=250),
        ),
    )
}


def get_variant(name: str) -> Variant:
    try:
        return VARIANTS[name]
    except KeyError:
        raise ValueError(f"unknown zoo variant {name!r}; known: {', '.join(VARIANTS)}") from None
