"""Arctic Inference's LSTM speculator (Snowflake; ArcticTraining trains it, Arctic's vLLM plugin
serves it), `method` = `sum_lstm`, and its plain recurrent sibling `sum_rnn`.

sum_lstm, head i (weights shared across heads; projection 0 reads the target's hidden state,
projection 1 the LSTM's own state for every later head):
    gate_g = proj_g(h) + emb_g(token) * alpha      for g in forget, input, output, cell
    f, i, o = sigmoid(gate_forget), sigmoid(gate_input), sigmoid(gate_output)
    c = c * f + GELU(cell_ln(gate_cell)) * i       (c starts at zero every call)
    h = GELU(state_ln(c)) * o;   logits = head(h)
The cell state carries what earlier heads saw across the k steps, which is what lets later heads
do better than the MLP's (which only passes the normed state on).

sum_rnn: head i is the MLP speculator's step with Arctic's names and tying.

Parameter names are Arctic's: `forget_emb.0`, `input_emb.0`, `cell_emb.0`, `output_emb.0`
(one module when `tie_lstm_embs`), `{forget,input,cell,output}_proj.{0,1}`, `cell_ln.0`,
`state_ln.0`, `head.{i}`; for sum_rnn `emb.{i}.0`, `proj.{i}.0`, `ln.{i}.0` (Arctic wraps each in
an nn.Sequential, hence the extra `.0`).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from spec_sdk.speculators.base import SQRT2, Carry, SpecNorm, Speculator, mix_alpha
from spec_sdk.speculators.config import LSTMSpeculatorConfig

GATES = ("forget", "input", "cell", "output")


class LSTMSpeculator(Speculator):
    def __init__(self, config: LSTMSpeculatorConfig, seed: int | None = 0) -> None:
        super().__init__()
        self.config = config
        self.n_predict = n = config.n_predict
        self.vocab_size = config.vocab_size
        self.input_dim = config.input_hidden_dim
        self.method = config.method
        self.tied = config.tie_weights
        d, v, h = config.inner_dim, config.vocab_size, config.input_hidden_dim
        # nn.Linear/nn.Embedding init from the global RNG; fork it so building one leaves it alone.
        with torch.random.fork_rng(devices=[]):
            if self.method == "sum_lstm":
                shared = nn.ModuleList([nn.Embedding(v, d)])
                for gate in GATES:
                    emb = shared if gate == "forget" or config.tie_lstm_embs else nn.ModuleList([nn.Embedding(v, d)])
                    setattr(self, f"{gate}_emb", emb)
                    proj = nn.ModuleList([nn.Linear(h, d, bias=False), nn.Linear(d, d, bias=False)])
                    setattr(self, f"{gate}_proj", proj)
                self.cell_ln = nn.ModuleList([SpecNorm(d)])
                self.state_ln = nn.ModuleList([SpecNorm(d)])
            else:
                count = 1 if self.tied else n
                self.emb = nn.ModuleList([nn.Sequential(nn.Embedding(v, d)) for _ in range(count)])
                self.proj = nn.ModuleList([
                    nn.Sequential(nn.Linear(h if i == 0 else d, d, bias=False))
                    for i in range(min(n, 2) if self.tied else n)
                ])
                self.ln = nn.ModuleList([nn.Sequential(SpecNorm(d)) for _ in range(count)])
            if self.tied:
                self.head = nn.ModuleList([nn.Linear(d, v, bias=False)] * n)
            else:
                self.head = nn.ModuleList([nn.Linear(d, v, bias=False) for _ in range(n)])
        self.ln0 = SpecNorm(h, affine=False) if config.scale_input else None
        self.alpha = mix_alpha(n, d)
        self.act = nn.GELU()
        if seed is not None:
            self.reset_parameters(seed)

    def reset_parameters(self, seed: int) -> None:
        """ArcticTraining's init: normal with std 1/sqrt(min(fan_in, fan_out)) for embeddings and
        linears, norms at identity; from a private generator."""
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for module in self.modules():
                if isinstance(module, (nn.Linear, nn.Embedding)):
                    w = module.weight
                    w.copy_(torch.randn(w.shape, generator=gen) / math.sqrt(min(w.shape)))
                elif isinstance(module, SpecNorm) and module.affine:
                    module.weight.fill_(1.0)
                    module.bias.fill_(0.0)

    def _proj_index(self, i: int) -> int:
        return (0 if i == 0 else 1) if self.tied else i

    def start(self, hidden: Tensor) -> Carry:
        h = self.ln0(hidden) / SQRT2 if self.ln0 is not None else hidden
        if self.method == "sum_rnn":
            return h
        cell = torch.zeros(*h.shape[:-1], self.config.inner_dim, dtype=h.dtype, device=h.device)
        return h, cell

    def step(self, carry: Carry, tokens: Tensor, i: int) -> Carry:
        p = self._proj_index(i)
        if self.method == "sum_rnn":
            assert isinstance(carry, Tensor)
            e = 0 if self.tied else i
            z = self.proj[p](carry) + self.emb[e](tokens) * self.alpha
            return self.act(self.ln[e](z))
        assert isinstance(carry, tuple)
        h, c = carry
        looked_up: dict[int, Tensor] = {}  # with tie_lstm_embs the four gates share one table
        pre = {}
        for g in GATES:
            table = getattr(self, f"{g}_emb")[0]
            if id(table) not in looked_up:
                looked_up[id(table)] = table(tokens) * self.alpha
            pre[g] = getattr(self, f"{g}_proj")[p](h) + looked_up[id(table)]
        candidate = self.act(self.cell_ln[0](pre["cell"])) * torch.sigmoid(pre["input"])
        c = c * torch.sigmoid(pre["forget"]) + candidate
        h = self.act(self.state_ln[0](c)) * torch.sigmoid(pre["output"])
        return h, c
