"""What `SpecEngine.stream` returns: a request's chunks as an async iterator that cancels the
request when its consumer goes away."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from spec_sdk.errors import RequestFailedError
from spec_sdk.request import Request
from spec_sdk.types import Completion, TokenChunk

if TYPE_CHECKING:
    from spec_sdk.engine import SpecEngine


class RequestStream:
    """The async iterator `SpecEngine.stream` returns; also an async context manager that
    cancels the request on exit if it has not finished."""

    def __init__(self, engine: SpecEngine, req: Request) -> None:
        self._engine = engine
        self._req = req
        self._recv: MemoryObjectReceiveStream[TokenChunk | BaseException] | None = None
        self._finished = False

    @property
    def request_id(self) -> str:
        return self._req.id

    def __aiter__(self) -> RequestStream:
        return self

    async def __anext__(self) -> TokenChunk:
        if self._finished:
            raise StopAsyncIteration
        try:
            if self._recv is None:
                self._recv = await self._engine._admit(self._req)
            try:
                item = await self._recv.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError):  # closed here by `cancel()` too
                self._finished = True
                if self._req.finish_reason == "error":
                    raise RequestFailedError(f"request {self._req.id} failed inside the engine") from None
                raise StopAsyncIteration from None
        except BaseException as exc:
            if not isinstance(exc, StopAsyncIteration):
                self.cancel()
            raise
        if isinstance(item, BaseException):
            self._finished = True
            raise item
        if item.finish_reason is not None:
            self._finished = True
        return item

    def cancel(self) -> None:
        """Stop the request; its KV cache is freed at the next step."""
        # only a flag: the step thread may be appending to the request right now
        if not self._finished and self._req.finish_reason is None:
            self._req.cancelled = True
            self._engine._wakeup.set()  # an idle scheduler must still come round to free it
        self._finished = True
        if self._recv is not None:
            self._recv.close()

    async def aclose(self) -> None:
        self.cancel()

    async def __aenter__(self) -> RequestStream:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        if not self._finished:
            self.cancel()

    def __del__(self) -> None:
        # a consumer that walked away without closing still frees its request
        if not self._finished and self._req.finish_reason is None:
            self._req.cancelled = True

    def completion(self) -> Completion:
        req = self._req
        if req.finish_reason is None:
            raise RuntimeError("the request has not finished")
        return Completion(
            request_id=req.id,
            prompt_ids=req.tokens[: req.prompt_len],
            token_ids=req.tokens[req.prompt_len :],
            text=req.text,
            finish_reason=req.finish_reason,
            stats=req.stats,
        )
