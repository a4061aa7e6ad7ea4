"""What the MLP and LSTM speculators share: the published norm, the state/embedding weighting,
and the step interface that both the proposer (free-running, one head after another) and the
trainer (teacher-forced over whole sequences) drive.

A speculator turns the target's last-layer hidden state at position t (the state that predicted
token t+1) and token t+1 into guesses for tokens t+2 .. t+1+n_predict, one head per token, each
head fed the token the previous head chose.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, Union

import torch
from torch import Tensor, nn

SQRT2 = math.sqrt(2.0)

# A head's recurrent state: the MLP carries one tensor, the LSTM (state, cell).
Carry = Union[Tensor, tuple[Tensor, Tensor]]


class SpecNorm(nn.Module):
    """The published speculators' "LayerNorm": x / rms(x) with no centring, then an optional
    elementwise scale and shift (IBM's LayerNormParameterized with use_mean=False; vLLM's
    MLPSpeculatorLayerNorm). Not nn.LayerNorm: that centres, and checkpoints trained without
    centring would drift."""

    def __init__(self, dim: int, affine: bool = True, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.affine = affine
        if affine:
            self.weight = nn.Parameter(torch.ones(dim))
            self.bias = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        # The statistic in float32 even under bf16 autocast (Arctic's use_high_precision_pow).
        xf = x.float()
        x = (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).to(x.dtype)
        if self.affine:
            x = self.weight * x + self.bias
        return x


def mix_alpha(n_predict: int, dim: int) -> float:
    """How much of a token embedding is added to a projected state, as vLLM and Arctic compute it:
    state_weight = 0.5 ** (0.5 / n_predict) keeps the base model's state at half the magnitude by
    the last head; emb_weight = sqrt((1 - state_weight**2) * dim / 2); the state is left
    unscaled and the embedding gets emb_weight / state_weight (the norm after the sum makes that
    the same as IBM's state * state_weight + emb * emb_weight)."""
    state_weight = 0.5 ** (0.5 / n_predict)
    emb_weight = math.sqrt((1 - state_weight**2) * (dim / 2))
    return emb_weight / state_weight


class Speculator(nn.Module):
    """Base of the speculator modules. Subclasses set the attributes and write `start`, `step`."""

    n_predict: int
    vocab_size: int
    input_dim: int  # the target's hidden size
    config: Any  # the attrs config it was built from (see spec_sdk.speculators.config)
    head: nn.ModuleList

    def start(self, hidden: Tensor) -> Carry:
        """The carry before head 0, from the target's hidden state `[..., input_dim]`."""
        raise NotImplementedError

    def step(self, carry: Carry, tokens: Tensor, i: int) -> Carry:
        """Head i's carry after seeing `tokens` (`[...]`, the token before the one it predicts)."""
        raise NotImplementedError

    @staticmethod
    def state_of(carry: Carry) -> Tensor:
        return carry[0] if isinstance(carry, tuple) else carry

    def logits(self, carry: Carry, i: int) -> Tensor:
        return self.head[i](self.state_of(carry))

    def teacher_forced(self, hidden: Tensor, inputs: Tensor) -> Iterator[Tensor]:
        """Training: logits `[B, T, V]` of each head in turn, every head fed the true tokens.

        `hidden` is `[B, T, H]` (position t's state predicted token t+1); `inputs` is `[B, T +
        n_predict - 1]`, the tokens from t+1 on, so head i reads `inputs[:, i : i + T]` and is
        trained to predict `inputs[:, i + 1 : i + 1 + T]` (IBM's training layout).
        """
        t = hidden.shape[1]
        carry = self.start(hidden)
        for i in range(self.n_predict):
            carry = self.step(carry, inputs[:, i : i + t], i)
            yield self.logits(carry, i)

    @torch.inference_mode()
    def draft(self, hidden: Tensor, tokens: Tensor, k: int) -> tuple[Tensor, Tensor]:
        """Greedy drafting for a batch: `hidden [B, H]`, `tokens [B]` (each request's newest token)
        -> (tokens `[B, k]`, each token's probability under its head `[B, k]`)."""
        carry = self.start(hidden.to(self.dtype))
        out, probs = [], []
        for i in range(k):
            carry = self.step(carry, tokens, i)
            p = torch.softmax(self.logits(carry, i).float(), dim=-1)
            top, tokens = p.max(dim=-1)
            out.append(tokens)
            probs.append(top)
        return torch.stack(out, 1), torch.stack(probs, 1)

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device
