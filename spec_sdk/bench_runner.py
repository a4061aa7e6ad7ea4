"""Every method of a bench run over the same prompts, interleaved prompt by prompt.

A shared machine's speed moves by tens of percent over seconds (the same matmul loop timed
back to back on the 2-core CI box: 0.77 s to 1.44 s). Run one method over all prompts and then
the next, and a slow spell lands on whichever method was running: ratios move by 10-15% from
one run to the next. Here every method has its own engine (its caches and learned state stay
its own, as they would in a long-lived server), all open at once, and prompt i is decoded by
every method before prompt i + 1 is, in an order that rotates by prompt, so a slow spell is
shared by all methods. Hugging Face `generate()` modes take part the same way.
"""

from __future__ import annotations

import contextlib
import functools
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import attrs
from tqdm import tqdm

from spec_sdk.backends.base import TargetModel
from spec_sdk.engine import SpecEngine
from spec_sdk.types import SamplingParams

if TYPE_CHECKING:
    from spec_sdk.bench import MethodResult
    from spec_sdk.bench_methods import Method
    from spec_sdk.hf_baselines import HFMode, HFResult


@attrs.define
class _Lane:
    """One method's side of the run: how to decode one prompt, and what it has done so far."""

    name: str
    decode: Callable[[Sequence[int] | str, SamplingParams], Awaitable[tuple[list[int], list[int]]]]
    seconds: float = 0.0
    outputs: list[list[int]] = attrs.field(factory=list)
    prompts: list[list[int]] = attrs.field(factory=list)


def _engine(backend: TargetModel, tokenizer: Any, method: Method) -> SpecEngine:
    return SpecEngine(
        backend, tokenizer=tokenizer, proposers=dict(method.proposers), num_speculative_tokens=method.k,
        policy=method.policy_factory() if method.policy_factory is not None else method.policy,
    )


async def _sdk_lane(stack: contextlib.AsyncExitStack, backend: TargetModel, tokenizer: Any, method: Method,
                    first: str | Sequence[int], first_params: SamplingParams) -> tuple[_Lane, SpecEngine]:
    async with _engine(backend, tokenizer, method) as warm:  # its own engine: its stats stay out
        await warm.generate(first, attrs.evolve(first_params, max_new_tokens=4))
    engine = await stack.enter_async_context(_engine(backend, tokenizer, method))

    async def decode(prompt: Sequence[int] | str, params: SamplingParams) -> tuple[list[int], list[int]]:
        done = await engine.generate(prompt, params)
        return list(done.token_ids), list(done.prompt_ids)

    return _Lane(method.name, decode), engine


def _hf_lane(model: Any, mode: HFMode, eos: Sequence[int], counter: list[int]) -> _Lane:
    from spec_sdk.hf_baselines import hf_generate

    async def decode(prompt: Sequence[int] | str, params: SamplingParams) -> tuple[list[int], list[int]]:
        ids = list(prompt)  # type: ignore[arg-type]  # the workload bench hands token ids
        # only the target's own forwards count: the assistant is a different module
        hook = model.register_forward_pre_hook(lambda *_: counter.__setitem__(0, counter[0] + 1))
        try:
            # in a worker thread, as our engine's model work runs (torch's intra-op thread team
            # differs between the main thread and others; on a busy CPU that alone moves timings)
            out = await anyio.to_thread.run_sync(
                functools.partial(hf_generate, model, ids, params, eos, mode, params.seed))
        finally:
            hook.remove()
        return out, ids

    return _Lane(mode.name, decode)


async def run_interleaved(
    backend: TargetModel,
    tokenizer: Any,
    methods: Sequence[Method],
    prompts: Sequence[str | Sequence[int]],
    params: Sequence[SamplingParams],
    hf_model: Any = None,
    hf: Sequence[HFMode] = (),
    progress: bool = False,
) -> tuple[list[MethodResult], list[HFResult]]:
    """Our `methods` and the HF `hf` modes (on `hf_model`) over `prompts`, one `SamplingParams`
    per prompt, interleaved prompt by prompt; results in the order given."""
    from spec_sdk.bench import MethodResult
    from spec_sdk.hf_baselines import HFResult

    async with contextlib.AsyncExitStack() as stack:
        lanes: list[_Lane] = []
        engines: list[SpecEngine] = []
        for m in methods:
            lane, engine = await _sdk_lane(stack, backend, tokenizer, m, prompts[0], params[0])
            lanes.append(lane)
            engines.append(engine)
        counters: list[list[int]] = []
        for mode in hf:
            counters.append([0])
            lane = _hf_lane(hf_model, mode, backend.eos_token_ids, counters[-1])
            await lane.decode(prompts[0], attrs.evolve(params[0], max_new_tokens=4))  # first-call costs stay out
            counters[-1][0] = 0
            lanes.append(lane)
        for i, (prompt, p) in enumerate(tqdm(list(zip(prompts, params)), desc="prompts", disable=not progress,
                                             leave=False)):
            shift = i % len(lanes)
            for lane in lanes[shift:] + lanes[:shift]:
                start = time.perf_counter()
                out, seen = await lane.decode(prompt, p)
                lane.seconds += time.perf_counter() - start
                lane.outputs.append(out)
                lane.prompts.append(seen)
        metrics = [e.metrics() for e in engines]
    sdk = [MethodResult(lane.name, sum(map(len, lane.outputs)), lane.seconds, m.totals, lane.outputs,
                        prompts=lane.prompts, policy=m.policy)
           for lane, m in zip(lanes, metrics)]
    hf_results = [HFResult(lane.name, sum(map(len, lane.outputs)), lane.seconds, c[0], lane.outputs, lane.prompts)
                  for lane, c in zip(lanes[len(methods):], counters)]
    return sdk, hf_results
