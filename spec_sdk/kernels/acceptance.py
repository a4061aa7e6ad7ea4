"""The acceptance step over a padded batch of chain drafts, greedy and rejection sampling.

Inputs are padded tensors, one row per request: the target's rows `[B, N + 1, V]` (root, then one
per draft position), the drafts `[B, N]` and their real lengths `[B]`; sampling adds the drafts'
distributions `q` `[B, N, V]` (None: deterministic drafts, a one-hot q) and the uniforms of
each request: `[B, N]` for the acceptance tests and `[B]` for the emitted token. This is the
textbook rule for every draft; `spec_sdk.verify` matches a deterministic draft against the
target's own keyed draw instead (spec_sdk.verify.keyed), which has the same law. Outputs:
accepted draft tokens per request and the one token the target adds (the correction at the
first rejection, else the bonus token).

`accept_greedy` / `accept_sampled` run the fused CuPy kernel (`spec_sdk.kernels.cupy_acceptance`)
for CUDA tensors when CuPy is installed, and otherwise these torch implementations, which compute
the same thing with `spec_sdk.verify`'s own functions and are the kernels' test oracle.
"""

from __future__ import annotations

import torch
from torch import Tensor

from spec_sdk.kernels import cupy_acceptance
from spec_sdk.verify import acceptance_probs, residual
from spec_sdk.verify.warp import sample_with_uniforms


def _leading(flags: Tensor) -> Tensor:
    """Leading True entries per row of `[B, N]`."""
    return flags.to(torch.int64).cumprod(dim=1).sum(dim=1)


def _valid(draft: Tensor, lengths: Tensor) -> Tensor:
    return torch.arange(draft.shape[1], device=draft.device)[None, :] < lengths[:, None]


def greedy_torch(logits: Tensor, draft: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    best = logits.argmax(dim=-1)  # [B, N + 1]; the first index among ties, as verify does
    n = draft.shape[1]
    accepted = _leading((draft == best[:, :n]) & _valid(draft, lengths)) if n else best.new_zeros(best.shape[0])
    return accepted, best.gather(1, accepted[:, None]).squeeze(1)


def sampled_torch(
    p: Tensor, q: Tensor | None, draft: Tensor, lengths: Tensor, u_accept: Tensor, u_extra: Tensor
) -> tuple[Tensor, Tensor]:
    b, _, v = p.shape
    n = draft.shape[1]
    rows = torch.arange(b, device=p.device)
    if n == 0:
        accepted = torch.zeros(b, dtype=torch.int64, device=p.device)
        return accepted, sample_with_uniforms(p[:, 0], u_extra)
    q_rows = None if q is None else q.reshape(b * n, v)
    probs = acceptance_probs(p[:, :n].reshape(b * n, v), q_rows, draft.reshape(-1)).view(b, n)
    accepted = _leading((u_accept.to(p.device) < probs) & _valid(draft, lengths))
    emit = p[rows, accepted]
    at = accepted.clamp(max=n - 1)
    if q is None:
        q_at = torch.zeros(b, v, dtype=p.dtype, device=p.device).scatter_(1, draft[rows, at][:, None], 1.0)
    else:
        q_at = q[rows, at].to(p)
    emit = torch.where((accepted < lengths)[:, None], residual(emit, q_at), emit)
    return accepted, sample_with_uniforms(emit, u_extra)


def _use_kernel(t: Tensor) -> bool:
    return t.is_cuda and cupy_acceptance.available()


def accept_greedy(logits: Tensor, draft: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    """(accepted `[B]`, token `[B]`) for greedy chains: accept while the draft equals the argmax."""
    if _use_kernel(logits):
        return cupy_acceptance.greedy(logits, draft, lengths)
    return greedy_torch(logits, draft, lengths)


def accept_sampled(
    p: Tensor, q: Tensor | None, draft: Tensor, lengths: Tensor, u_accept: Tensor, u_extra: Tensor
) -> tuple[Tensor, Tensor]:
    """(accepted `[B]`, token `[B]`) for rejection sampling of chains against warped target rows `p`."""
    if _use_kernel(p):
        return cupy_acceptance.sampled(p, q, draft, lengths, u_accept, u_extra)
    return sampled_torch(p, q, draft, lengths, u_accept, u_extra)
