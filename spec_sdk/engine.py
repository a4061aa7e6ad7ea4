"""The async core: `SpecEngine` owns the model, batches requests and streams their tokens.

One scheduler task runs the step loop; model work runs in a worker thread so the host's
event loop stays responsive. Requests join and leave between steps. Works under asyncio
and trio (anyio).
"""

from __future__ import annotations

import copy
import logging
import math
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.abc
import anyio.lowlevel
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from spec_sdk.backends.base import TargetModel
from spec_sdk.config import EngineConfig, build_proposers
from spec_sdk.errors import EngineClosedError, EngineFullError
from spec_sdk.policy import FixedPolicy, Policy
from spec_sdk.proposers.base import Proposer
from spec_sdk.request import Request, new_request_id, validate_prompt
from spec_sdk.step import StepRunner
from spec_sdk.stream import RequestStream
from spec_sdk.types import Completion, SamplingParams, SpecStats, TokenChunk

log = logging.getLogger("spec_sdk")


@attrs.frozen
class EngineMetrics:
    """A snapshot of the engine: load, totals and per-proposer speculation stats."""

    active: int
    waiting: int
    finished: int
    cancelled: int
    failed: int
    totals: SpecStats
    proposers: dict[str, SpecStats]
    policy: dict[str, Any] | None = None  # the policy's own report, for policies that give one

    def as_dict(self) -> dict[str, Any]:
        out = {k: getattr(self, k) for k in ("active", "waiting", "finished", "cancelled", "failed")}
        out["totals"] = self.totals.as_dict()
        out["proposers"] = {k: v.as_dict() for k, v in self.proposers.items()}
        out["policy"] = self.policy
        return out


def _as_backend(target: Any) -> TargetModel:
    # duck-typed on the methods, so a backend written before an optional attribute existed still counts
    if all(callable(getattr(target, m, None)) for m in ("add", "score", "commit", "remove")):
        return target  # type: ignore[no-any-return]
    from spec_sdk.backends.hf import HFBackend

    return HFBackend(target)


def _load_tokenizer(target: Any) -> Any:
    if isinstance(target, (str, Path)):
        from transformers import AutoTokenizer

        try:
            return AutoTokenizer.from_pretrained(str(target))
        except (OSError, ValueError):
            return None
    return None


class _Entry:
    """A request plus the send side of its stream."""

    __slots__ = ("req", "send", "admitted")

    def __init__(self, req: Request, send: MemoryObjectSendStream[TokenChunk | BaseException]) -> None:
        self.req = req
        self.send = send
        self.admitted = True  # holds one admission slot until released


class SpecEngine:
    """Speculative decoding for many concurrent requests.

    ```python
    async with SpecEngine("path/to/model", proposers=["ngram"]) as engine:
        done = await engine.generate("Hello", max_new_tokens=32)
        async for chunk in engine.stream([1, 2, 3], SamplingParams(temperature=0.8)):
            print(chunk.text, end="")
    ```

    `target` is a `TargetModel`, a transformers model, or a local model path. `proposers` are
    registered names, `Proposer` objects, or `{name: options}`; `policy` defaults to asking
    the first proposer for `num_speculative_tokens` tokens. `speculative_config` takes the
    vLLM / Arctic Inference dict shape instead. With no proposer, the engine decodes
    target-only: the baseline that speculative output must equal.
    """

    def __init__(
        self,
        target: Any,
        *,
        proposers: Sequence[str | Proposer] | Mapping[str, Mapping[str, Any]] = (),
        policy: Policy | None = None,
        tokenizer: Any = None,
        num_speculative_tokens: int = 4,
        speculative_config: Mapping[str, Any] | None = None,
        max_batch: int = 32,
        max_waiting: int = 256,
        admission: Literal["reject", "wait"] = "reject",
    ) -> None:
        config = EngineConfig.from_args(
            proposers=proposers,
            num_speculative_tokens=num_speculative_tokens,
            speculative_config=speculative_config,
            max_batch=max_batch,
            max_waiting=max_waiting,
            admission=admission,
        )
        self.backend: TargetModel = _as_backend(target)
        slots = getattr(self.backend, "max_slots", None)
        if isinstance(slots, int) and 0 < slots < config.max_batch:
            # a backend with a fixed number of KV slots runs at most that many requests; the
            # rest wait in the queue (or are rejected at the door) instead of failing in prefill
            config = attrs.evolve(config, max_batch=slots)
        self.config = config
        self.tokenizer = tokenizer if tokenizer is not None else _load_tokenizer(target)
        self.proposers: dict[str, Proposer] = build_proposers(config.proposers)
        for proposer in self.proposers.values():
            # optional hook: a proposer that must match the target (vocabulary, hidden size)
            # checks it here, before any request, and fails with a ConfigError
            bind = getattr(proposer, "bind", None)
            if callable(bind):
                bind(self.backend, self.tokenizer)
        first = next(iter(self.proposers), None)
        self.policy: Policy = policy or config.policy or FixedPolicy(first, config.num_speculative_tokens)
        self._stats = SpecStats()
        self._proposer_stats: dict[str, SpecStats] = {}
        self._runner = StepRunner(self.backend, self.proposers, self.policy, self._stats, self._proposer_stats)
        self._waiting: deque[_Entry] = deque()
        self._active: dict[str, _Entry] = {}
        self._slots = anyio.Semaphore(config.max_batch + config.max_waiting)
        self._wakeup = anyio.Event()
        self._tg: anyio.abc.TaskGroup | None = None
        self._counts = {"finished": 0, "cancelled": 0, "failed": 0}

    # -- lifecycle ---------------------------------------------------------------------

    async def __aenter__(self) -> SpecEngine:
        if self._tg is not None:
            raise EngineClosedError("engine already running")
        self._tg = anyio.create_task_group()
        await self._tg.__aenter__()
        self._tg.start_soon(self._run, name="spec_sdk-scheduler")
        return self

    async def __aexit__(self, *exc_info: Any) -> bool | None:
        assert self._tg is not None
        self._tg.cancel_scope.cancel()
        try:
            # the body's own exception propagates as itself, not wrapped in an exception group
            await self._tg.__aexit__(None, None, None)
            return None
        finally:
            self._tg = None
            await self._fail_all(EngineClosedError("engine shut down"))

    async def _fail_all(self, exc: BaseException) -> None:
        entries = list(self._active.values()) + list(self._waiting)
        self._waiting.clear()
        if entries:
            # the scheduler is gone, so release backend state here
            await anyio.to_thread.run_sync(self._runner.release, [e.req for e in entries])
        for entry in entries:
            self._active.pop(entry.req.id, None)
            self._close(entry, exc)

    # -- submission --------------------------------------------------------------------

    def _make_request(self, prompt: str | Sequence[int], params: SamplingParams | None, kw: dict[str, Any]) -> Request:
        if self._tg is None:
            raise EngineClosedError("use the engine inside `async with SpecEngine(...)`")
        if params is None:
            params = SamplingParams(**kw)
        elif kw:
            params = attrs.evolve(params, **kw)
        ids = validate_prompt(prompt, self.tokenizer, self.backend.vocab_size, self.backend.max_context)
        return Request(new_request_id(), ids, params, self.tokenizer, self.backend.eos_token_ids, self.backend.max_context)

    async def _admit(self, req: Request) -> MemoryObjectReceiveStream[TokenChunk | BaseException]:
        if self.config.admission == "wait":
            await self._slots.acquire()
        else:
            try:
                self._slots.acquire_nowait()
            except anyio.WouldBlock:
                raise EngineFullError(
                    f"engine is full ({self.config.max_batch} running, {self.config.max_waiting} waiting)"
                ) from None
        send, recv = anyio.create_memory_object_stream[TokenChunk | BaseException](math.inf)
        self._waiting.append(_Entry(req, send))
        self._wakeup.set()
        return recv

    def stream(self, prompt: str | Sequence[int], params: SamplingParams | None = None, **kw: Any) -> RequestStream:
        """Start a request and iterate over its `TokenChunk`s as steps produce them.

        Bad input raises `InvalidRequestError` here, at the call. Leaving the loop early or
        cancelling the consuming task cancels the request and frees its state.
        """
        req = self._make_request(prompt, params, kw)
        return RequestStream(self, req)

    async def generate(self, prompt: str | Sequence[int], params: SamplingParams | None = None, **kw: Any) -> Completion:
        """Run a request to the end and return its `Completion`."""
        async with self.stream(prompt, params, **kw) as stream:
            async for _ in stream:
                pass
            return stream.completion()

    def metrics(self) -> EngineMetrics:
        """A snapshot: active and waiting requests, finished / cancelled / failed counts,
        speculation totals, per-proposer stats, and the policy's report when it gives one."""
        report = getattr(self.policy, "report", None)
        return EngineMetrics(
            policy=report() if callable(report) else None,
            active=len(self._active),
            waiting=len(self._waiting),
            totals=copy.deepcopy(self._stats),
            proposers=copy.deepcopy(self._proposer_stats),
            **self._counts,
        )

    # -- the scheduler -----------------------------------------------------------------

    def _close(self, entry: _Entry, final: BaseException | None = None) -> None:
        if final is not None:
            try:
                entry.send.send_nowait(final)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pass
        entry.send.close()
        self._release_admission(entry)

    def _release_admission(self, entry: _Entry) -> None:
        if entry.admitted:
            entry.admitted = False
            self._slots.release()

    async def _run(self) -> None:
        while True:
            done = [e for e in self._active.values() if e.req.cancelled or e.req.finish_reason is not None]
            dropped = [e for e in self._waiting if e.req.cancelled]
            for e in dropped:
                self._waiting.remove(e)
            new: list[_Entry] = []
            while self._waiting and len(self._active) + len(new) - len(done) < self.config.max_batch:
                new.append(self._waiting.popleft())
            if not (done or dropped or new or self._active):
                await self._wakeup.wait()
                self._wakeup = anyio.Event()
                continue
            gone = {e.req.id for e in done}
            batch = [e.req for e in self._active.values() if e.req.id not in gone]
            chunks, failed = await anyio.to_thread.run_sync(
                self._step_sync, [e.req for e in done], [e.req for e in new], batch, len(self._waiting)
            )
            for e in done:  # only now, so metrics never show a request as gone before it is freed
                del self._active[e.req.id]
            for e in done + dropped:
                if e.req.cancelled:
                    e.req.finish_reason = e.req.finish_reason or "cancelled"
                    self._counts["cancelled"] += 1
                else:
                    self._counts["failed" if e.req.finish_reason == "error" else "finished"] += 1
                self._close(e)
            for e in new:
                if e.req.id in failed:
                    self._counts["failed"] += 1
                    self._close(e, failed[e.req.id])
                else:
                    self._active[e.req.id] = e
            for chunk in chunks:
                entry = self._active[chunk.request_id]
                try:
                    entry.send.send_nowait(chunk)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    entry.req.cancelled = True
                if entry.req.finish_reason is not None:
                    # its caller has the last chunk and may submit the next request at once: that
                    # one must not be refused for a slot this request gives up at the next step
                    self._release_admission(entry)
            await anyio.lowlevel.checkpoint()

    def _step_sync(
        self, release: list[Request], new: list[Request], batch: list[Request], waiting: int
    ) -> tuple[list[TokenChunk], dict[str, BaseException]]:
        self._runner.release(release)
        failed = self._runner.prefill(new)
        batch = batch + [r for r in new if r.id not in failed]
        if not batch:
            return [], failed
        try:
            return self._runner.step(batch, waiting), failed
        except Exception as exc:  # the model itself failed: fail this batch, keep serving
            log.exception("step failed")
            for req in batch:
                req.finish_reason = "error"
            return [], failed | {r.id: exc for r in new if r.id not in failed}
