"""What a Python user would run instead: Hugging Face `model.generate()`, in the bench's process.

Three modes, on the very model object our engine wraps, one prompt at a time (assisted
generation only supports batch size 1 anyway):

* `hf-plain`: `generate()`;
* `hf-assisted`: `generate(assistant_model=draft)` with transformers' default assistant settings
  (5.x: 20 draft tokens, "constant" schedule, stop drafting below 0.4 draft confidence);
* `hf-prompt-lookup`: `generate(prompt_lookup_num_tokens=N)` (n-gram size up to 2, the default).

Treated exactly like our engine: stop after the first EOS (kept in the output) or after
`max_new_tokens`; sampling warps with temperature / top-k / top-p / min-p from the same
`SamplingParams`, seeded per prompt with `torch.manual_seed`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs
import torch
from transformers import PreTrainedModel

from spec_sdk.types import SamplingParams

HF_PLAIN, HF_ASSISTED, HF_LOOKUP = "hf-plain", "hf-assisted", "hf-prompt-lookup"


@attrs.frozen
class HFMode:
    """A named `generate()` configuration: the extra kwargs that select the decoding mode."""

    name: str
    kwargs: Mapping[str, Any] = attrs.field(factory=dict)


@attrs.define
class HFResult:
    name: str
    tokens: int
    seconds: float
    forwards: int  # target forwards (prefill included: it produces the first token)
    outputs: list[list[int]]
    prompts: list[list[int]]  # the ids generate() was really given, to prove the same prompts

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds else 0.0

    @property
    def mean_accepted_length(self) -> float:
        return self.tokens / self.forwards if self.forwards else 0.0


def hf_modes(draft: PreTrainedModel | None, lookup_tokens: int) -> list[HFMode]:
    """The HF modes to run; assisted only when a draft is at hand."""
    modes = [HFMode(HF_PLAIN)]
    if draft is not None:
        modes.append(HFMode(HF_ASSISTED, {"assistant_model": draft}))
    modes.append(HFMode(HF_LOOKUP, {"prompt_lookup_num_tokens": lookup_tokens}))
    return modes


def generate_kwargs(params: SamplingParams, eos_token_ids: Sequence[int], pad_token_id: int | None) -> dict[str, Any]:
    """`generate()` kwargs equivalent to our `SamplingParams`.

    Options passed as `None` are filled from the model's generation config and then from
    transformers' global defaults, and those include `top_k=50`: "no top-k" must be passed as
    `top_k=0`. For the same reason `eos_token_id=None` does not turn EOS off, so `ignore_eos`
    is not supported here.
    """
    if params.ignore_eos or params.stop or params.stop_token_ids:
        raise ValueError("the HF baselines mirror EOS and max_new_tokens only; no ignore_eos or stop conditions")
    kw: dict[str, Any] = {
        "max_new_tokens": params.max_new_tokens,
        "eos_token_id": list(eos_token_ids),
        "pad_token_id": pad_token_id,
    }
    if params.greedy:
        kw["do_sample"] = False
    else:
        kw.update(do_sample=True, temperature=params.temperature, top_k=params.top_k, top_p=params.top_p)
        if params.min_p > 0:
            kw["min_p"] = params.min_p
    return kw


def hf_generate(
    model: PreTrainedModel,
    prompt: Sequence[int],
    params: SamplingParams,
    eos_token_ids: Sequence[int],
    mode: HFMode,
    seed: int | None = None,
) -> list[int]:
    """One `generate()` call; returns the new token ids (EOS included when it ended the output)."""
    input_ids = torch.tensor([list(prompt)], dtype=torch.long, device=model.device)
    kw = generate_kwargs(params, eos_token_ids, model.generation_config.pad_token_id)
    if seed is not None:
        torch.manual_seed(seed)
    out = model.generate(input_ids, attention_mask=torch.ones_like(input_ids), **kw, **mode.kwargs)
    new = [int(t) for t in out[0, input_ids.shape[1] :].tolist()]
    # batch size 1 never pads, but cut at the first EOS anyway so the rule is ours, not theirs
    for i, tok in enumerate(new):
        if tok in eos_token_ids:
            return new[: i + 1]
    return new
