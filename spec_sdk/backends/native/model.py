"""The Llama-family forward over a padded batch, reading and writing the KV slots in place.

Per layer: RMSNorm, one fused q/k/v matmul, rotary on q and k together, the step's keys and values
written into their slots, `scaled_dot_product_attention` over each row's slot (grouped-query heads
handled by SDPA itself), the output projection, RMSNorm, one fused gate/up matmul, SiLU-gated
product and the down projection. No cache objects, no module calls, no per-request loop: about a
dozen tensor ops per layer whatever the batch.

The same function runs eagerly and under CUDA-graph capture; `gather` says how the cache is read
(a strided view of a slot range when the rows are consecutive slots, else an index_select of the
rows' slots, which is also the only form a graph can replay with other slots).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from spec_sdk.backends.native.batch import Batch, Split, attention_mask
from spec_sdk.backends.native.kv import KVSlots
from spec_sdk.backends.native.rope import RopeTables, apply_rope
from spec_sdk.backends.native.spec import LlamaSpec
from spec_sdk.backends.native.weights import LlamaWeights

Linear = Callable[[torch.Tensor, Any, "torch.Tensor | None"], torch.Tensor]


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    if x.dtype == torch.float64:
        # transformers normalises in float32 whatever the dtype; float64 runs are the exact tests
        # against it, so do the same rather than be more precise than the reference
        xf = x.to(torch.float32)
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
        return weight * xf.to(x.dtype)
    return F.rms_norm(x, (x.shape[-1],), weight, eps)


def dense_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return F.linear(x, weight, bias)


def forward(
    spec: LlamaSpec,
    w: LlamaWeights,
    rope: RopeTables,
    kv: KVSlots,
    batch: Batch,
    linear: Linear = dense_linear,
    gather: bool = False,
) -> torch.Tensor:
    """Final-norm hidden states (what the LM head reads): `[B, T, hidden]`, or `[N, hidden]` for
    the N real nodes row after row when the batch is packed (`batch.real`: rows of different
    sizes; the matmuls then skip the padding, only attention sees the padded `[B, T]` layout).
    The step's keys and values are left in the cache at `batch.write`."""
    b, t = batch.ids.shape
    nh, nkv, d = spec.num_heads, spec.num_kv_heads, spec.head_dim
    eps = spec.rms_norm_eps
    kv_len = batch.kv_len
    real = batch.real
    ids, pos, write = batch.ids, batch.pos, batch.write
    slot_rows = batch.slots[:, None].expand(b, t)
    if real is not None:
        ids, pos, write, slot_rows = (x.reshape(-1)[real] for x in (ids, pos, write, slot_rows))
    lead = ids.shape  # (B, T), or (N,) packed
    cos = rope.cos[pos].unsqueeze(-2)  # [..., 1, D]: broadcast over heads
    sin = rope.sin[pos].unsqueeze(-2)
    if batch.plain and not gather:
        mask = None  # one chain: causal with the queries at the end; T == 1 needs no mask at all
        causal = t > 1
        if causal and kv_len != t:
            mask, causal = attention_mask(batch.lengths, batch.ancestry, kv_len), False
    elif batch.split is None:
        mask, causal = attention_mask(batch.lengths, batch.ancestry, kv_len), False
    else:
        mask, causal = None, False
        split = batch.split
        head_mask = attention_mask(batch.lengths, batch.ancestry[:, : split.head], kv_len)
        tail_mask = attention_mask(batch.lengths[split.rows], batch.ancestry[split.rows, split.head :], kv_len)
        tail_slots = batch.slots[split.rows]
    view = None if gather else batch.slot_range

    x = w.embed[ids]
    for layer_index, layer in enumerate(w.layers):
        y = rms_norm(x, layer.attn_norm, eps)
        qkv = linear(y, layer.qkv, layer.qkv_bias).view(*lead, nh + 2 * nkv, d)
        qk = apply_rope(qkv[..., : nh + nkv, :], cos, sin)
        k_all, v_all = kv.k[layer_index], kv.v[layer_index]
        k_all[slot_rows, :, write] = qk[..., nh:, :]
        v_all[slot_rows, :, write] = qkv[..., nh + nkv :, :]
        q = qk[..., :nh, :]
        if view is not None:
            keys = k_all[view[0] : view[1], :, :kv_len]
            values = v_all[view[0] : view[1], :, :kv_len]
        else:
            keys = k_all[:, :, :kv_len].index_select(0, batch.slots)
            values = v_all[:, :, :kv_len].index_select(0, batch.slots)
        if batch.split is not None:
            att = _split_attention(q, keys, values, k_all[:, :, :kv_len], v_all[:, :, :kv_len], batch.split,
                                   head_mask, tail_mask, tail_slots)
        else:
            if real is not None:  # attention needs the rows padded back to [B, T]
                q = q.new_zeros(b * t, nh, d).index_copy_(0, real, q).view(b, t, nh, d)
            att = _sdpa(q.transpose(1, 2), keys, values, mask, causal).transpose(1, 2).reshape(b, t, nh * d)
            if real is not None:
                att = att.reshape(b * t, nh * d).index_select(0, real)
        x = x + linear(att, layer.o, layer.o_bias)
        y = rms_norm(x, layer.mlp_norm, eps)
        gate, up = linear(y, layer.gate_up, layer.gate_up_bias).chunk(2, dim=-1)
        x = x + linear(F.silu(gate) * up, layer.down, layer.down_bias)
    return rms_norm(x, w.norm, eps)


def _sdpa(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor | None,
          causal: bool) -> torch.Tensor:
    return F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, is_causal=causal,
                                          enable_gqa=q.shape[1] != keys.shape[1])


def _split_attention(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, k_cache: torch.Tensor,
                     v_cache: torch.Tensor, split: Split, head_mask: torch.Tensor, tail_mask: torch.Tensor,
                     tail_slots: torch.Tensor) -> torch.Tensor:
    """`[N, heads * head_dim]` attention output of the packed queries `q` `[N, heads, head_dim]`:
    every row's first `split.head` nodes in one pass over `keys`/`values`, the longer rows' other
    nodes in a second over just those rows' cache."""
    n, nh, d = q.shape
    out = q.new_zeros(n, nh, d)  # (padding nodes past the real ones get no attention: zeros)

    def attend(gather: torch.Tensor, rows: int, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
               valid: torch.Tensor | None, dest: torch.Tensor) -> None:
        queries = q.index_select(0, gather).view(rows, -1, nh, d).transpose(1, 2)
        att = _sdpa(queries, k, v, mask, False).transpose(1, 2).reshape(-1, nh, d)
        out.index_copy_(0, dest, att if valid is None else att.index_select(0, valid))

    attend(split.head_gather, keys.shape[0], keys, values, head_mask, split.head_valid, split.head_dest)
    attend(split.gather, split.rows.shape[0], k_cache.index_select(0, tail_slots), v_cache.index_select(0, tail_slots),
           tail_mask, split.valid, split.dest)
    return out.view(n, nh * d)


def lm_head(w: LlamaWeights, hidden: torch.Tensor, linear: Linear = dense_linear) -> torch.Tensor:
    return linear(hidden, w.head, None)
