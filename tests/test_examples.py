"""The programs in examples/ really run: the scripts as `__main__`, the web app under real
uvicorn on a loopback port, driven over real HTTP."""

from __future__ import annotations

import importlib.util
import json
import runpy
import socket
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import anyio
import httpx
import pytest
import uvicorn

import spec_sdk
from spec_sdk.testing import reference_greedy, tie_aware_equal
from spec_sdk.zoo import load

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_script(name: str, *args: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # In-process, as `__main__`: a subprocess would pay the torch import again (~5 s each).
    monkeypatch.setattr(sys, "argv", [name, *args])
    runpy.run_path(str(EXAMPLES / name), run_name="__main__")


def import_example(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"examples_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_blocking_example(monkeypatch, capsys):
    run_script("blocking.py", "--model", "tiny", "--max-new-tokens", "24", monkeypatch=monkeypatch)
    out = capsys.readouterr().out
    assert "mean accepted length" in out
    assert "same tokens as target-only decoding: True" in out


def test_custom_proposer_example(monkeypatch, capsys):
    # the registry is process-wide: keep "bigram" out of the other tests
    monkeypatch.setattr("spec_sdk.proposers.registry._local", {})
    run_script("custom_proposer.py", "--examples", "3", "--samples", "200", "--model", "tiny", monkeypatch=monkeypatch)
    out = capsys.readouterr().out
    assert "lossless:" in out and "mean accepted length" in out


# -- the web app -------------------------------------------------------------------------------

PROMPTS = [f"def f{i}(x):\n    return x + {i}\n\n\ndef g{i}(y):\n" for i in range(16)]
MAX_NEW = 32


@pytest.fixture
def server() -> Iterator[str]:
    web_app = import_example("web_app")
    app = web_app.create_app("tiny", proposers=("ngram",), k=4)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    srv = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not srv.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        thread.join(30)
        sock.close()


async def _read_stream(client: httpx.AsyncClient, body: dict) -> list[dict]:
    events = []
    async with client.stream("POST", "/stream", json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line.removeprefix("data: ")))
    return events


async def _drop_after_first_event(client: httpx.AsyncClient) -> int:
    # long enough (ignore_eos, 200 tokens) that it is still running when the client leaves
    body = {"prompt": "while True:\n", "max_new_tokens": 200, "ignore_eos": True}
    async with client.stream("POST", "/stream", json=body) as response:
        async for line in response.aiter_lines():
            if line.startswith("data: "):
                return len(json.loads(line.removeprefix("data: "))["token_ids"])
    raise AssertionError("no event before the disconnect")


@pytest.mark.anyio
async def test_web_app_streams_to_concurrent_clients_and_frees_a_dropped_one(server):
    results: list[list[dict]] = [[] for _ in PROMPTS]
    async with httpx.AsyncClient(base_url=server, timeout=60) as client:

        async def one(i: int) -> None:
            results[i] = await _read_stream(client, {"prompt": PROMPTS[i], "max_new_tokens": MAX_NEW})

        async with anyio.create_task_group() as tg:
            tg.start_soon(_drop_after_first_event, client)
            for i in range(len(PROMPTS)):
                tg.start_soon(one, i)

        # the dropped request leaves the engine at a later step: poll until it has
        with anyio.fail_after(30):
            while True:
                metrics = (await client.get("/metrics")).json()
                if metrics["active"] == 0 and metrics["waiting"] == 0:
                    break
                await anyio.sleep(0.05)
        assert (await client.post("/stream", json={"prompt": []})).status_code == 400

    assert metrics["cancelled"] == 1, metrics
    assert metrics["finished"] == len(PROMPTS) and metrics["failed"] == 0, metrics
    assert metrics["backend_requests"] == 0, "a request's KV cache outlived it"

    model, tokenizer = load("tiny")
    for prompt, events in zip(PROMPTS, results, strict=True):
        assert events[-1]["finish_reason"] is not None
        assert all(e["finish_reason"] is None for e in events[:-1])
        text = "".join(e["text"] for e in events)
        tokens = [t for e in events for t in e["token_ids"]]
        blocking = await anyio.to_thread.run_sync(
            lambda: spec_sdk.generate(model, prompt, proposers=["ngram"], tokenizer=tokenizer, max_new_tokens=MAX_NEW)
        )
        assert text == blocking.text and tokens == list(blocking.token_ids)
        # and lossless: target-only greedy decoding, computed without the SDK (tie-aware)
        ref, margins = reference_greedy(model, tokenizer.encode(prompt), len(tokens))
        assert tie_aware_equal(tokens, ref, margins)
