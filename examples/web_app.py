"""Stream completions as server-sent events from one shared `SpecEngine` (Starlette + uvicorn).

    .venv/bin/python examples/web_app.py --model tiny --port 8000
    curl -N localhost:8000/stream -d '{"prompt": "def add(a, b):", "max_new_tokens": 32}'
    curl localhost:8000/metrics

Routes:
- `POST /stream`: a JSON body with `prompt` (text or token ids) and any `SamplingParams` field;
  answers `text/event-stream`, one `data: {"text", "token_ids", "accepted", "finish_reason"}`
  event per decoding step, the last one with a `finish_reason`.
- `POST /generate`: the same body; answers the whole completion as JSON.
- `GET /metrics`: `engine.metrics()` plus `backend_requests`, the requests holding KV cache.

Every request shares the one engine, so concurrent requests are batched into the same
target forwards. A client that disconnects cancels its request, whose KV cache is freed at
the engine's next step. Bad input is a 400, a full engine a 503.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
from collections.abc import AsyncIterator, Sequence, Sized
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from spec_sdk import EngineFullError, InvalidRequestError, RequestStream, SamplingParams, SpecEngine, TokenChunk
from spec_sdk.zoo import default_model_dir, resolve


def _event(chunk: TokenChunk) -> str:
    data = {
        "text": chunk.text,
        "token_ids": list(chunk.token_ids),
        "accepted": chunk.accepted,
        "finish_reason": chunk.finish_reason,
    }
    return f"data: {json.dumps(data)}\n\n"


async def _events(first: TokenChunk, chunks: RequestStream) -> AsyncIterator[str]:
    yield _event(first)
    try:
        async for chunk in chunks:
            yield _event(chunk)
    except Exception as exc:  # the model failed or the engine shut down: tell the client, in-band
        yield f"event: error\ndata: {json.dumps({'error': str(exc)})}\n\n"


class EventStream(StreamingResponse):
    """One request's chunks as server-sent events."""

    def __init__(self, first: TokenChunk, chunks: RequestStream) -> None:
        super().__init__(_events(first, chunks), media_type="text/event-stream", headers={"cache-control": "no-cache"})
        self.chunks = chunks

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            # A client that left may leave the body generator suspended at a `yield`, to be
            # closed only when it is garbage-collected; cancel now so the next step frees it.
            self.chunks.cancel()


async def _parse(request: Request) -> tuple[str | list[int], SamplingParams]:
    try:
        body = await request.json()
    except ValueError:
        raise InvalidRequestError("the body is not JSON") from None
    if not isinstance(body, dict) or "prompt" not in body:
        raise InvalidRequestError("expected a JSON object with a 'prompt' and any SamplingParams fields")
    prompt = body.pop("prompt")
    try:
        return prompt, SamplingParams(**body)
    except TypeError as exc:  # an unknown field
        raise InvalidRequestError(str(exc)) from None


async def stream(request: Request) -> Response:
    engine: SpecEngine = request.app.state.engine
    try:
        prompt, params = await _parse(request)
        chunks = engine.stream(prompt, params)
        # Admission happens at the first chunk: wait for it here, so a full engine is a 503
        # rather than a 200 whose stream breaks.
        first = await chunks.__anext__()
    except InvalidRequestError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    except EngineFullError as exc:
        return JSONResponse({"error": str(exc)}, status_code=503)
    return EventStream(first, chunks)


async def generate(request: Request) -> Response:
    engine: SpecEngine = request.app.state.engine
    try:
        prompt, params = await _parse(request)
        done = await engine.generate(prompt, params)
    except InvalidRequestError as exc:
        return JSONResponse({"error": str(exc)}, status_code=400)
    except EngineFullError as exc:
        return JSONResponse({"error": str(exc)}, status_code=503)
    return JSONResponse({
        "text": done.text,
        "token_ids": list(done.token_ids),
        "finish_reason": done.finish_reason,
        "mean_accepted_length": done.stats.mean_accepted_length,
    })


async def metrics(request: Request) -> Response:
    engine: SpecEngine = request.app.state.engine
    out = engine.metrics().as_dict()
    backend = engine.backend
    out["backend_requests"] = len(backend) if isinstance(backend, Sized) else None
    return JSONResponse(out)


def create_app(
    model: str | None = None, proposers: Sequence[str] = ("suffix",), k: int = 6, max_batch: int = 32
) -> Starlette:
    """`model`: a zoo variant (`tiny`, `full`) or a model directory; default, the committed zoo."""
    path = str(resolve(model) if model else default_model_dir())

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # One engine for the whole process: it owns the model, and its scheduler batches
        # every request the server is handling into each step.
        async with SpecEngine(path, proposers=list(proposers), num_speculative_tokens=k, max_batch=max_batch) as engine:
            app.state.engine = engine
            yield

    routes = [
        Route("/stream", stream, methods=["POST"]),
        Route("/generate", generate, methods=["POST"]),
        Route("/metrics", metrics, methods=["GET"]),
    ]
    return Starlette(routes=routes, lifespan=lifespan)


# `uvicorn examples.web_app:app` serves this one; SPEC_SDK_MODEL picks the model.
app = create_app(os.environ.get("SPEC_SDK_MODEL"))


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="zoo variant (tiny, full) or model dir; default: the full zoo")
    parser.add_argument("--proposer", action="append", help="proposer name (repeat for several); default: suffix")
    parser.add_argument("-k", type=int, default=6, help="draft tokens per step")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    args = parser.parse_args(argv)
    uvicorn.run(create_app(args.model, args.proposer or ("suffix",), args.k), host=args.host, port=args.port)


if __name__ == "__main__":
    main()
