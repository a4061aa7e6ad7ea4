"""The fused acceptance step as CuPy kernels: one thread block per request does the whole chain.

Greedy: for each position in turn the block reduces its row to the argmax (first index among
ties, as torch does) and compares it with the draft; it stops at the first mismatch, so rows
after a rejection are never read. Sampling: one thread runs the acceptance tests
(`u < min(1, p(x) / q(x))`, in p's dtype compared in float64 as torch promotes them), then the
block draws the emitted token from the residual `max(p - q, 0)` (or from p itself after a full
acceptance) by inverse CDF: a float64 block sum for the total, then a chunked block scan that
stops at the first cumulative mass above `u * total`, clamped to the last token with mass, as
`spec_sdk.verify.warp.sample_with_uniforms` does. The residual is not normalised first (the
draw scales `u` by the total instead), which differs from the torch path only by rounding.

Inputs are torch tensors; they are handed to CuPy through DLPack (no copy) and the kernels run
on torch's current stream, so nothing waits for the host. CuPy is optional (the `gpu` extra):
`available()` is False without it, or without a GPU, and callers then use the torch path.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import Tensor

BLOCK = 256

_COMMON = r"""
#define BLOCK 256
__device__ double block_sum(double x, double* buf) {
    int tid = threadIdx.x;
    buf[tid] = x;
    __syncthreads();
    for (int s = BLOCK / 2; s > 0; s >>= 1) {
        if (tid < s) buf[tid] += buf[tid + s];
        __syncthreads();
    }
    double total = buf[0];
    __syncthreads();
    return total;
}
"""

_GREEDY = r"""
extern "C" __global__ void greedy_accept(
    const T* logits, const long long* draft, const long long* lengths,
    long long* accepted, long long* token, int n1, int n, int v)
{
    __shared__ T best_v[BLOCK];
    __shared__ int best_i[BLOCK];
    const int b = blockIdx.x, tid = threadIdx.x;
    const long long len = lengths[b];
    for (long long row = 0; row <= len; ++row) {
        const T* x = logits + ((long long)b * n1 + row) * v;
        T bv = (T)0;
        int bi = v;  // v: nothing seen yet
        for (int i = tid; i < v; i += BLOCK) {
            T val = x[i];
            if (bi == v || val > bv) { bv = val; bi = i; }
        }
        best_v[tid] = bv;
        best_i[tid] = bi;
        __syncthreads();
        for (int s = BLOCK / 2; s > 0; s >>= 1) {
            if (tid < s) {
                T ov = best_v[tid + s];
                int oi = best_i[tid + s];
                int mi = best_i[tid];
                if (oi != v && (mi == v || ov > best_v[tid] || (ov == best_v[tid] && oi < mi))) {
                    best_v[tid] = ov;
                    best_i[tid] = oi;
                }
            }
            __syncthreads();
        }
        const int arg = best_i[0];
        __syncthreads();
        if (row == len || draft[(long long)b * n + row] != arg) {
            if (tid == 0) { accepted[b] = row; token[b] = arg; }
            return;
        }
    }
}
"""

_SAMPLED = r"""
__device__ T emit_value(const T* prow, const T* qrow, long long reject_token, int use_residual, int i) {
    T pv = prow[i];
    if (!use_residual) return pv;
    T qv = qrow != 0 ? qrow[i] : (i == reject_token ? (T)1 : (T)0);
    T e = pv - qv;
    return e > (T)0 ? e : (T)0;
}

extern "C" __global__ void sampled_accept(
    const T* p, const T* q, int has_q, const long long* draft, const long long* lengths,
    const double* u_accept, const double* u_extra, long long* accepted, long long* token,
    int n1, int n, int v)
{
    __shared__ double buf[BLOCK];
    __shared__ long long s_acc;
    __shared__ int s_first, s_last;
    const int b = blockIdx.x, tid = threadIdx.x;
    const long long len = lengths[b];
    if (tid == 0) {
        long long a = 0;
        for (; a < len; ++a) {
            long long x = draft[(long long)b * n + a];
            T px = p[((long long)b * n1 + a) * v + x];
            T prob;
            if (has_q) {
                T qx = q[((long long)b * n + a) * v + x];
                T r = px / qx;
                prob = qx > (T)0 ? (r < (T)1 ? r : (T)1) : (T)0;
            } else {
                prob = px < (T)1 ? px : (T)1;
            }
            if (!(u_accept[(long long)b * n + a] < (double)prob)) break;
        }
        s_acc = a;
        s_first = v;
        s_last = -1;
    }
    __syncthreads();
    const long long a = s_acc;
    const T* prow = p + ((long long)b * n1 + a) * v;
    int use_residual = a < len;
    const T* qrow = (use_residual && has_q) ? q + ((long long)b * n + a) * v : 0;
    const long long reject_token = use_residual ? draft[(long long)b * n + a] : -1;

    double local = 0.0;
    for (int i = tid; i < v; i += BLOCK) local += (double)emit_value(prow, qrow, reject_token, use_residual, i);
    double total = block_sum(local, buf);
    if (use_residual && !(total > 0.0)) {  // nothing left of the residual: fall back to p
        use_residual = 0;
        local = 0.0;
        for (int i = tid; i < v; i += BLOCK) local += (double)prow[i];
        total = block_sum(local, buf);
    }
    int last = -1;
    for (int i = tid; i < v; i += BLOCK) if (emit_value(prow, qrow, reject_token, use_residual, i) > (T)0) last = i;
    atomicMax(&s_last, last);
    const double target = u_extra[b] * total;
    double carry = 0.0;
    __syncthreads();
    for (int base = 0; base < v; base += BLOCK) {
        const int i = base + tid;
        buf[tid] = i < v ? (double)emit_value(prow, qrow, reject_token, use_residual, i) : 0.0;
        __syncthreads();
        for (int off = 1; off < BLOCK; off <<= 1) {
            double add = tid >= off ? buf[tid - off] : 0.0;
            __syncthreads();
            buf[tid] += add;
            __syncthreads();
        }
        if (i < v && carry + buf[tid] > target) atomicMin(&s_first, i);
        carry += buf[BLOCK - 1];
        __syncthreads();
        if (s_first < v) break;
    }
    if (tid == 0) {
        int last_with_mass = s_last >= 0 ? s_last : v - 1;
        accepted[b] = a;
        token[b] = s_first < last_with_mass ? s_first : last_with_mass;
    }
}
"""


@functools.lru_cache(maxsize=1)
def _cupy() -> Any:
    try:
        import cupy
    except Exception:  # not installed, or installed without a usable CUDA runtime
        return None
    return cupy


def available() -> bool:
    return _cupy() is not None and torch.cuda.is_available()


_C_TYPES = {torch.float32: "float", torch.float64: "double"}


@functools.lru_cache(maxsize=None)
def _kernel(name: str, dtype: torch.dtype) -> Any:
    cupy = _cupy()
    body = _GREEDY if name == "greedy_accept" else _SAMPLED
    source = f"#define T {_C_TYPES[dtype]}\n" + _COMMON + body
    return cupy.RawKernel(source, name)


def _as_cupy(t: Tensor) -> Any:
    return _cupy().from_dlpack(t.contiguous())


def _launch(name: str, dtype: torch.dtype, blocks: int, args: tuple[Any, ...]) -> None:
    import numpy as np

    cupy = _cupy()
    converted = tuple(_as_cupy(a) if isinstance(a, Tensor) else np.int32(a) for a in args)
    with cupy.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream):
        _kernel(name, dtype)((blocks,), (BLOCK,), converted)


def _work_dtype(t: Tensor) -> torch.dtype:
    return torch.float64 if t.dtype == torch.float64 else torch.float32


def greedy(logits: Tensor, draft: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    b, n1, v = logits.shape
    dtype = _work_dtype(logits)
    accepted = torch.empty(b, dtype=torch.int64, device=logits.device)
    token = torch.empty_like(accepted)
    if b == 0:
        return accepted, token
    args = (logits.to(dtype), draft.to(torch.int64), lengths.to(torch.int64), accepted, token, n1, draft.shape[1], v)
    _launch("greedy_accept", dtype, b, args)
    return accepted, token


def sampled(
    p: Tensor, q: Tensor | None, draft: Tensor, lengths: Tensor, u_accept: Tensor, u_extra: Tensor
) -> tuple[Tensor, Tensor]:
    b, n1, v = p.shape
    dtype = _work_dtype(p)
    device = p.device
    accepted = torch.empty(b, dtype=torch.int64, device=device)
    token = torch.empty_like(accepted)
    if b == 0:
        return accepted, token
    q_arg = q.to(device=device, dtype=dtype) if q is not None else torch.zeros(1, dtype=dtype, device=device)
    args = (
        p.to(dtype), q_arg, int(q is not None), draft.to(torch.int64), lengths.to(torch.int64),
        u_accept.to(device=device, dtype=torch.float64), u_extra.to(device=device, dtype=torch.float64),
        accepted, token, n1, draft.shape[1], v,
    )
    _launch("sampled_accept", dtype, b, args)
    return accepted, token
