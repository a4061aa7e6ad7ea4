"""The fused acceptance step: its torch path equals `spec_sdk.verify` (the oracle) on padded
batches of chains, greedy and sampled, with and without draft distributions; on a GPU with CuPy
the kernels equal the torch path."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spec_sdk.kernels import accept_greedy, accept_sampled, greedy_torch, sampled_torch
from spec_sdk.kernels import cupy_acceptance
from spec_sdk.types import Draft, SamplingParams
from spec_sdk.verify import verify_batch, warp_probs
from spec_sdk.verify.warp import make_generator, uniforms


def _case(seed: int, batch: int, vocab: int, max_n: int, with_q: bool, dtype=torch.float64):
    """Random logits, drafts that often follow the argmax (so acceptance runs vary), padded."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(0, max_n + 1, (batch,), generator=g)
    n = int(lengths.max()) if batch else 0
    logits = torch.randn(batch, n + 1, vocab, generator=g, dtype=dtype) * 3
    best = logits.argmax(-1)
    draft = torch.randint(0, vocab, (batch, n), generator=g)
    follow = torch.rand(batch, n, generator=g) < 0.7
    draft = torch.where(follow, best[:, :n], draft)
    q = None
    if with_q:
        q = torch.rand(batch, n, vocab, generator=g, dtype=dtype) ** 3
        q = q / q.sum(-1, keepdim=True)
    drafts = [
        Draft(tokens=draft[b, : int(lengths[b])].tolist(), probs=None if q is None else q[b, : int(lengths[b])])
        if int(lengths[b]) else None
        for b in range(batch)
    ]
    return logits, draft, lengths, q, drafts


@settings(max_examples=60)
@given(seed=st.integers(0, 10_000), batch=st.integers(1, 9), vocab=st.integers(2, 40), max_n=st.integers(0, 6))
def test_greedy_torch_path_equals_verify(seed, batch, vocab, max_n):
    logits, draft, lengths, _, drafts = _case(seed, batch, vocab, max_n, with_q=False)
    accepted, token = accept_greedy(logits, draft, lengths)
    verdicts = verify_batch([logits[b, : 1 + int(lengths[b])] for b in range(batch)], drafts,
                            [SamplingParams()] * batch, [None] * batch)
    assert accepted.tolist() == [v.num_accepted for v in verdicts]
    assert token.tolist() == [v.tokens[-1] for v in verdicts]


@settings(max_examples=60)
@given(seed=st.integers(0, 10_000), batch=st.integers(1, 9), vocab=st.integers(2, 40), max_n=st.integers(0, 6),
       with_q=st.booleans(), temperature=st.sampled_from([0.5, 1.0, 2.0]))
def test_sampled_torch_path_equals_verify(seed, batch, vocab, max_n, with_q, temperature):
    logits, draft, lengths, q, drafts = _case(seed, batch, vocab, max_n, with_q)
    params = SamplingParams(temperature=temperature)
    # the kernel applies the textbook test to every draft, a deterministic one as a one-hot q;
    # verify matches a deterministic draft against the target's own draw instead (the same law,
    # another realisation), so it is handed the one-hot q explicitly
    as_sampled = [d if d is None or d.probs is not None else
                  Draft(tokens=d.tokens, probs=torch.nn.functional.one_hot(torch.tensor(d.tokens), vocab).double())
                  for d in drafts]
    verdicts = verify_batch([logits[b, : 1 + int(lengths[b])] for b in range(batch)], as_sampled, [params] * batch,
                            [make_generator(seed + b) for b in range(batch)])
    # the uniforms verify drew per request: n acceptance tests, n residual draws, the target's own
    # n + 1; the emitted token used the residual draw where a draft token was rejected, else the last
    n = draft.shape[1]
    u_accept = torch.zeros(batch, n, dtype=torch.float64)
    u_extra = torch.zeros(batch, dtype=torch.float64)
    for b, v in enumerate(verdicts):
        m, c = int(lengths[b]), v.num_accepted
        u = uniforms(make_generator(seed + b), 3 * m + 1)
        u_accept[b, :m] = u[:m]
        u_extra[b] = u[m + c] if c < m else u[3 * m]
    p = warp_probs(logits.reshape(-1, logits.shape[-1]), params).view_as(logits)
    accepted, token = accept_sampled(p, q, draft, lengths, u_accept, u_extra)
    assert accepted.tolist() == [v.num_accepted for v in verdicts]
    assert token.tolist() == [v.tokens[-1] for v in verdicts]


def test_empty_drafts():
    logits = torch.randn(3, 1, 10)
    accepted, token = accept_greedy(logits, torch.zeros(3, 0, dtype=torch.long), torch.zeros(3, dtype=torch.long))
    assert accepted.tolist() == [0, 0, 0] and token.tolist() == logits[:, 0].argmax(-1).tolist()


def test_cupy_is_optional():
    # without CuPy or a GPU the dispatch takes the torch path; importing never fails
    assert cupy_acceptance.available() in (True, False)
    if not torch.cuda.is_available():
        assert not cupy_acceptance.available()


gpu = pytest.mark.skipif(not cupy_acceptance.available(), reason="needs a CUDA GPU and CuPy")


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("vocab", [7, 1000, 32000])
def test_cupy_greedy_equals_torch(dtype, vocab):
    for seed in range(20):
        logits, draft, lengths, _, _ = _case(seed, 16, vocab, 8, with_q=False, dtype=dtype)
        if seed % 4 == 0:
            logits[:, :, vocab // 2] = logits.amax(-1) + 1  # ties: the first index must win
            logits[:, :, vocab // 3] = logits[:, :, vocab // 2]
        args = (logits.cuda(), draft.cuda(), lengths.cuda())
        got = cupy_acceptance.greedy(*args)
        want = greedy_torch(*args)
        assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


@pytest.mark.gpu
@gpu
@pytest.mark.parametrize("with_q", [False, True])
@pytest.mark.parametrize("vocab", [7, 1000, 32000])
def test_cupy_sampled_equals_torch(with_q, vocab):
    mismatched_tokens = 0
    total = 0
    for seed in range(20):
        logits, draft, lengths, q, _ = _case(seed, 16, vocab, 8, with_q=with_q, dtype=torch.float32)
        g = torch.Generator().manual_seed(seed)
        u_accept = torch.rand(draft.shape, generator=g, dtype=torch.float64)
        u_extra = torch.rand(draft.shape[0], generator=g, dtype=torch.float64)
        p = torch.softmax(logits, -1)
        args = (p.cuda(), None if q is None else q.float().cuda(), draft.cuda(), lengths.cuda(), u_accept.cuda(),
                u_extra.cuda())
        got = cupy_acceptance.sampled(*args)
        want = sampled_torch(*args)
        assert torch.equal(got[0], want[0])  # acceptance: the same float ops, exactly
        mismatched_tokens += int((got[1] != want[1]).sum())
        total += got[1].numel()
    # the draw scales u by an unnormalised total: only a boundary within rounding can differ
    assert mismatched_tokens <= max(1, total // 1000)
