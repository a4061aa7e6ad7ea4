"""A byte-level BPE tokenizer trained with `tokenizers`, saved as a transformers tokenizer.

Byte-level means every string round-trips (any Unicode, no unknown token). The special tokens and
chat format are in chat.py. The saved directory loads offline with
`AutoTokenizer.from_pretrained(path)` as a `PreTrainedTokenizerFast` that prepends `<s>`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast

from spec_sdk.zoo.chat import ASSISTANT, BOS, CHAT_TEMPLATE, EOS, PAD, SPECIAL_TOKENS, USER


def train_tokenizer(texts: Iterable[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """Train on raw text (without special-token strings, which the trainer would split)."""
    tok = Tokenizer(models.BPE())
    # GPT-2 style: split on the byte-level regex, no prefix space, so decode(encode(s)) == s.
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    bos_id = tok.token_to_id(BOS)
    # Every encoded text starts with <s>, like the documents the models are trained on.
    tok.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos_id)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        extra_special_tokens=[USER, ASSISTANT],
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,  # keep decode an exact inverse of encode
        model_max_length=1_000_000,
    )


def save_tokenizer(tokenizer: PreTrainedTokenizerFast, out_dir: Path) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(str(out_dir))
