"""The async engine: concurrency, cancellation, admission, bad input, faulty proposers,
both anyio backends, a responsive host loop."""

from __future__ import annotations

import random
import time

import anyio
import pytest

from spec_sdk import (
    EngineClosedError,
    EngineFullError,
    HFBackend,
    InvalidRequestError,
    SamplingParams,
    SpecEngine,
)
from spec_sdk.proposers.ngram import NgramProposer
from spec_sdk.testing import FaultyProposer, OracleProposer, TableTarget, greedy_next_fn, reference_greedy

pytestmark = pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"], indirect=True)


async def _drained(engine: SpecEngine) -> None:
    """Wait until the scheduler has reaped everything finished or cancelled."""
    for _ in range(500):
        m = engine.metrics()
        if m.active == 0 and m.waiting == 0:
            return
        await anyio.sleep(0.01)
    raise AssertionError(f"engine still holds requests: {engine.metrics()}")


@pytest.mark.anyio
async def test_many_concurrent_streams_with_random_cancellations(anyio_backend):
    target = TableTarget(vocab_size=8, order=2, seed=1)
    proposer = NgramProposer()
    rng = random.Random(7)
    outcomes: dict[int, str] = {}
    async with SpecEngine(target, proposers=[proposer], max_batch=16, max_waiting=64) as engine:

        async def consumer(i: int, cancel_after: int | None) -> None:
            prompt = [rng.randrange(8) for _ in range(rng.randint(1, 12))]
            got: list[int] = []
            with anyio.CancelScope() as scope:
                async with engine.stream(prompt, max_new_tokens=40, temperature=0.7 * (i % 2), seed=i) as stream:
                    async for chunk in stream:
                        got.extend(chunk.token_ids)
                        if cancel_after is not None and len(got) >= cancel_after:
                            scope.cancel()  # the consumer task is cancelled mid-stream
                        await anyio.sleep(0)
            outcomes[i] = "cancelled" if scope.cancelled_caught else f"done:{len(got)}"
            if not scope.cancelled_caught:
                assert len(got) == 40

        async with anyio.create_task_group() as tg:
            for i in range(60):
                tg.start_soon(consumer, i, rng.choice([None, None, 1, 5, 20]))
        await _drained(engine)
        m = engine.metrics()
    assert len(outcomes) == 60
    n_cancelled = sum(v == "cancelled" for v in outcomes.values())
    assert 0 < n_cancelled < 60
    assert m.cancelled == n_cancelled and m.finished == 60 - n_cancelled
    assert not target.active_requests  # no leaked KV state
    assert proposer._indexes == {}  # finish() dropped every per-request index


@pytest.mark.anyio
async def test_break_out_of_stream_frees_request(anyio_backend, tiny_model):
    backend = HFBackend(tiny_model)
    async with SpecEngine(backend, proposers=["ngram"]) as engine:
        async with engine.stream([1, 2, 3, 1, 2, 3], max_new_tokens=200) as stream:
            async for _ in stream:
                break
        await _drained(engine)
        assert len(backend) == 0
        assert engine.metrics().cancelled == 1
        # and it keeps serving
        done = await engine.generate([4, 5, 6], max_new_tokens=5)
        assert len(done.token_ids) == 5


@pytest.mark.anyio
async def test_bad_input_gets_typed_errors_and_engine_keeps_serving(anyio_backend):
    target = TableTarget(vocab_size=5, seed=0, max_context=32)
    async with SpecEngine(target, proposers=["ngram"]) as engine:
        with pytest.raises(InvalidRequestError, match="vocabulary"):
            await engine.generate([1, 9], max_new_tokens=3)
        with pytest.raises(InvalidRequestError, match="vocabulary"):
            await engine.generate([-1], max_new_tokens=3)
        with pytest.raises(InvalidRequestError, match="empty"):
            await engine.generate([], max_new_tokens=3)
        with pytest.raises(InvalidRequestError, match="context"):
            await engine.generate([1] * 32, max_new_tokens=3)
        with pytest.raises(InvalidRequestError, match="tokenizer"):
            await engine.generate("text without a tokenizer", max_new_tokens=3)
        for bad in ({"temperature": -1.0}, {"top_p": 0.0}, {"top_k": -2}, {"min_p": 1.5}, {"max_new_tokens": 0}):
            with pytest.raises(InvalidRequestError):
                await engine.generate([1, 2], **bad)
        done = await engine.generate([1, 2], max_new_tokens=4)
        assert len(done.token_ids) == 4 and done.finish_reason == "length"
    assert not target.active_requests


@pytest.mark.anyio
async def test_context_limit_ends_request_with_length(anyio_backend):
    target = TableTarget(vocab_size=5, seed=0, max_context=10)
    async with SpecEngine(target, proposers=["ngram"]) as engine:
        done = await engine.generate([1, 2, 3, 4, 1, 2], max_new_tokens=50)
    assert len(done.token_ids) == 4 and done.finish_reason == "length"


@pytest.mark.anyio
@pytest.mark.parametrize("mode", ["raise", "out_of_vocab", "too_long", "bad_probs"])
async def test_faulty_proposer_costs_only_its_draft(anyio_backend, mode):
    target = TableTarget(vocab_size=6, order=2, seed=2)
    faulty = FaultyProposer(mode, vocab_size=6)
    prompt = [1, 2, 3, 4]
    ref, _ = reference_greedy(target, prompt, 12)
    async with SpecEngine(target, proposers=[faulty]) as engine:
        done = await engine.generate(prompt, max_new_tokens=12)
        m = engine.metrics()
    assert list(done.token_ids) == ref
    assert m.totals.drafted == 0 and done.stats.proposer_errors >= 1
    assert faulty.calls["propose"] >= 1


@pytest.mark.anyio
async def test_admission_is_bounded_with_typed_error(anyio_backend):
    target = TableTarget(vocab_size=5, seed=0)
    async with SpecEngine(target, max_batch=2, max_waiting=1, admission="reject") as engine:
        streams = [engine.stream([1, 2], max_new_tokens=4000) for _ in range(4)]
        for s in streams[:2]:
            assert (await s.__anext__()).token_ids  # running
        async with anyio.create_task_group() as tg:
            tg.start_soon(_consume, streams[2])  # queued behind the two running requests
            while engine.metrics().waiting == 0:
                await anyio.sleep(0.001)
            with pytest.raises(EngineFullError):
                await streams[3].__anext__()
            for s in streams[:3]:
                await s.aclose()
        await _drained(engine)
        assert engine.metrics().cancelled == 3
        done = await engine.generate([1, 2], max_new_tokens=3)  # capacity came back
        assert len(done.token_ids) == 3


async def _consume(stream) -> None:
    async for _ in stream:
        pass


@pytest.mark.anyio
async def test_admission_wait_mode_serves_everyone(anyio_backend):
    target = TableTarget(vocab_size=5, seed=0)
    results = []
    async with SpecEngine(target, max_batch=2, max_waiting=0, admission="wait") as engine:
        async with anyio.create_task_group() as tg:
            for i in range(10):
                tg.start_soon(lambda i=i: _collect(engine, [1, i % 5], results))
    assert len(results) == 10 and all(len(r) == 6 for r in results)


async def _collect(engine: SpecEngine, prompt: list[int], out: list) -> None:
    out.append((await engine.generate(prompt, max_new_tokens=6)).token_ids)


@pytest.mark.anyio
async def test_host_loop_stays_responsive(anyio_backend, tiny_model):
    """Model work runs in a worker thread: a heartbeat task keeps ticking between chunks.

    Each forward is made to take 20 ms (a sleep in the backend's score, which runs wherever the
    model work runs): on the event loop's thread it would block the heartbeat for all of it; in a
    worker thread the heartbeat ticks through it. (With the tiny model's sub-millisecond steps
    alone, a step could end before the heartbeat's next tick, and the test failed on a fast
    machine for no fault of the engine.)"""

    class SlowBackend(HFBackend):
        def score(self, items):  # type: ignore[no-untyped-def]
            time.sleep(0.02)
            return super().score(items)

    ticks = 0
    ticks_between_chunks = []

    async def heartbeat() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            # not sleep(0): a loop that never waits holds the GIL against the worker thread
            # (under trio that made 20 tokens of a tiny model take two minutes)
            await anyio.sleep(0.001)

    async with SpecEngine(SlowBackend(tiny_model)) as engine:
        async with anyio.create_task_group() as tg:
            tg.start_soon(heartbeat)
            last = ticks
            async for _ in engine.stream([1, 2, 3], max_new_tokens=20):
                ticks_between_chunks.append(ticks - last)
                last = ticks
            tg.cancel_scope.cancel()
    assert sum(t > 0 for t in ticks_between_chunks) >= len(ticks_between_chunks) - 1


@pytest.mark.anyio
async def test_engine_outside_context_raises(anyio_backend):
    engine = SpecEngine(TableTarget(vocab_size=4))
    with pytest.raises(EngineClosedError):
        await engine.generate([1], max_new_tokens=2)


@pytest.mark.anyio
async def test_stop_token_ids_and_eos(anyio_backend):
    target = TableTarget(vocab_size=6, order=1, seed=4, eos_token_ids=(0,))
    prompt = [1, 2]
    ref, _ = reference_greedy(target, prompt, 30)
    async with SpecEngine(target, proposers=[OracleProposer(greedy_next_fn(target))]) as engine:
        done = await engine.generate(prompt, max_new_tokens=30)
        stop_tok = ref[2]
        stopped = await engine.generate(prompt, max_new_tokens=30, stop_token_ids=[stop_tok], ignore_eos=True)
    if 0 in ref:
        assert list(done.token_ids) == ref[: ref.index(0) + 1] and done.finish_reason == "eos"
    else:
        assert list(done.token_ids) == ref and done.finish_reason == "length"
    assert stopped.token_ids[-1] == stop_tok and stop_tok not in stopped.token_ids[:-1]
    assert stopped.finish_reason == "stop"


@pytest.mark.anyio
async def test_seeded_sampling_is_reproducible(anyio_backend):
    target = TableTarget(vocab_size=6, order=2, seed=5)
    outs = []
    for _ in range(2):
        async with SpecEngine(target, proposers=["ngram"]) as engine:
            p = SamplingParams(temperature=1.0, max_new_tokens=20, seed=42)
            outs.append((await engine.generate([1, 2, 3], p)).token_ids)
    assert outs[0] == outs[1]


class _ConfusedPolicy:
    """Asks for a proposer the engine does not have, and for a huge budget."""

    def plan(self, req, load):
        return {"missing": 3, "ngram": 10_000}

    def choose(self, req, drafts):
        return drafts.get("ngram")


@pytest.mark.anyio
async def test_policy_mistakes_cost_nothing_but_drafts(anyio_backend):
    target = TableTarget(vocab_size=4, order=1, seed=6)
    prompt = [1, 2, 3, 1, 2, 3]
    ref, _ = reference_greedy(target, prompt, 25)
    async with SpecEngine(target, proposers=["ngram"], policy=_ConfusedPolicy()) as engine:
        done = await engine.generate(prompt, max_new_tokens=25)
        m = engine.metrics()
    assert list(done.token_ids) == ref
    assert m.totals.drafted > 0  # budgets were clipped to the room left, not refused
