"""The zoo's document and chat format.

Every document the zoo models see is text that ends with `</s>`; the tokenizer adds `<s>` in
front. A conversation is rendered as

    <|user|>
    {user text}
    <|assistant|>
    {assistant text}</s><|user|>
    ...

`<|user|>`, `<|assistant|>`, `<s>`, `</s>` and `<pad>` are special tokens (one id each, never
split, dropped by `decode(..., skip_special_tokens=True)`). The assistant's `</s>` ends its turn,
so generation from `render_chat(turns, add_generation_prompt=True)` stops on EOS by itself.
Code (stdlib source) is plain text followed by `</s>`; a code prompt is sent raw, without markers.

`CHAT_TEMPLATE` is the same format as a Jinja template, so `tokenizer.apply_chat_template(...)`
gives the same ids as `tokenizer(render_chat(...))`.
"""

from __future__ import annotations

from typing import Literal, Sequence

import attrs

PAD, BOS, EOS, USER, ASSISTANT = "<pad>", "<s>", "</s>", "<|user|>", "<|assistant|>"
# Order fixes the ids: <pad>=0, <s>=1, </s>=2, <|user|>=3, <|assistant|>=4.
SPECIAL_TOKENS: tuple[str, ...] = (PAD, BOS, EOS, USER, ASSISTANT)

Role = Literal["user", "assistant"]


@attrs.frozen
class Turn:
    role: Role = attrs.field(validator=attrs.validators.in_(("user", "assistant")))
    content: str


def render_chat(turns: Sequence[Turn], add_generation_prompt: bool = False, document: bool = False) -> str:
    """Render turns in the zoo chat format (without `<s>`, which the tokenizer adds).

    `add_generation_prompt` appends the assistant marker for the model to answer.
    `document` renders a training document: trailing user turns (no reply) are dropped so the
    text ends with the assistant's `</s>`; an empty string means nothing is left.
    """
    turns = list(turns)
    if document:
        while turns and turns[-1].role == "user":
            turns.pop()
    parts = [
        f"{USER}\n{t.content}\n" if t.role == "user" else f"{ASSISTANT}\n{t.content}{EOS}"
        for t in turns
    ]
    if add_generation_prompt:
        parts.append(f"{ASSISTANT}\n")
    return "".join(parts)


def chat_prompt(user_text: str) -> str:
    """A single-turn chat prompt: the chat workload's shape."""
    return render_chat([Turn("user", user_text)], add_generation_prompt=True)


CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for m in messages %}"
    "{% if m['role'] == 'user' %}" + USER + "\n{{ m['content'] }}\n"
    "{% elif m['role'] == 'assistant' %}" + ASSISTANT + "\n{{ m['content'] }}" + EOS + "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}" + ASSISTANT + "\n{% endif %}"
)
