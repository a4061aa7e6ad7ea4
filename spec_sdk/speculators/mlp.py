"""IBM's MLPSpeculator (Wertheimer et al., "Accelerating Production LLMs with Combined
Token/Embedding Speculators", arXiv:2404.19124), as fms-extras trains it and vLLM serves it.

Head i: state = GELU(norm_i(proj_i(state) + emb_i(token) * alpha)), logits = head_i(state); the
first state is the target's hidden state (normed and divided by sqrt 2 when `scale_input`).
Module and parameter names are the published ones (`emb.{i}`, `proj.{i}`, `head.{i}`,
`ln.{i}.weight/bias`), so a checkpoint's tensors map one to one.

`tie_weights` shares one embedding, one head and one norm across heads, and one projection
across heads 1.. (head 0 projects from the target's width, the others from inner_dim): the same
module repeated in the ModuleList, as vLLM builds it, so `named_parameters()` lists each shared
tensor once under its first name (`emb.0`, `proj.0`, `proj.1`, `head.0`, `ln.0`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from spec_sdk.speculators.base import SQRT2, Carry, SpecNorm, Speculator, mix_alpha
from spec_sdk.speculators.config import MLPSpeculatorConfig


class MLPSpeculator(Speculator):
    def __init__(self, config: MLPSpeculatorConfig, seed: int | None = 0) -> None:
        super().__init__()
        self.config = config
        self.n_predict = n = config.n_predict
        self.vocab_size = config.vocab_size
        self.input_dim = config.emb_dim
        width = config.width
        # nn.Linear/nn.Embedding init from the global RNG; fork it so building one leaves it alone.
        with torch.random.fork_rng(devices=[]):
            if config.tie_weights:
                tied = nn.Linear(width, width, bias=False)
                self.emb = nn.ModuleList([nn.Embedding(config.vocab_size, width)] * n)
                self.proj = nn.ModuleList([nn.Linear(config.emb_dim, width, bias=False)] + [tied] * (n - 1))
                self.head = nn.ModuleList([nn.Linear(width, config.vocab_size, bias=False)] * n)
                self.ln = nn.ModuleList([SpecNorm(width)] * n)
            else:
                self.emb = nn.ModuleList([nn.Embedding(config.vocab_size, width) for _ in range(n)])
                self.proj = nn.ModuleList(
                    [nn.Linear(config.emb_dim if i == 0 else width, width, bias=False) for i in range(n)]
                )
                self.head = nn.ModuleList([nn.Linear(width, config.vocab_size, bias=False) for _ in range(n)])
                self.ln = nn.ModuleList([SpecNorm(width) for _ in range(n)])
        self.ln0 = SpecNorm(config.emb_dim, affine=False) if config.scale_input else None
        self.alpha = mix_alpha(n, width)
        self.act = nn.GELU()
        if seed is not None:
            self.reset_parameters(seed)

    def reset_parameters(self, seed: int) -> None:
        """fms-extras' init: normal with std 1/sqrt(inner_dim) for embeddings and linears (its
        truncation at +-2 is in absolute units, ~20 std, so it never cuts); from a private
        generator, so building a speculator neither reads nor moves the global RNG."""
        gen = torch.Generator().manual_seed(seed)
        std = 1 / math.sqrt(self.config.width)
        with torch.no_grad():
            for name, p in self.named_parameters():
                if name.startswith("ln."):
                    p.fill_(1.0 if name.endswith("weight") else 0.0)
                else:
                    p.copy_(torch.randn(p.shape, generator=gen) * std)

    def start(self, hidden: Tensor) -> Carry:
        return self.ln0(hidden) / SQRT2 if self.ln0 is not None else hidden

    def step(self, carry: Carry, tokens: Tensor, i: int) -> Carry:
        assert isinstance(carry, Tensor)
        z = self.proj[i](carry) + self.emb[i](tokens) * self.alpha
        return self.act(self.ln[i](z))

