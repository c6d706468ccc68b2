"""Step executors (``[executor] name = "sync" | "pipelined"``; older configs wrote
``executor`` and ``submit_ahead`` at the top level, still read with a deprecation note).

The Tinker service trains in clock cycles, one step a cycle at best, and a request that is not
queued when a cycle starts waits for the next one. ``sync`` awaits each request before sending
the next, so every request misses a cycle (``benchmarks/pipelining.py`` measures four cycles a
step). ``pipelined`` sends a step's ``forward_backward`` and ``optim_step`` together and keeps
up to ``submit_ahead`` more steps queued, so a step is waiting whenever a cycle starts.

Both give the same updates: requests run in submission order, and ``optim_step`` of step n
is submitted before ``forward_backward`` of step n+1.
"""

from __future__ import annotations

import time
from collections import deque
from typing import Any

import tinkerplug
from tinkerplug.hook_types import StepBatch, StepExecutor, StepResult, as_step_batch
from tinkerplug.step_results import step_result


def send(client: Any, batch: StepBatch) -> Any:
    """The ``forward_backward`` future of ``batch``: a named Tinker loss, or a callable one
    through ``forward_backward_custom`` (one pass on the local backend)."""
    if callable(batch.loss_fn):
        return client.forward_backward_custom(batch.datums, batch.loss_fn)
    return client.forward_backward(batch.datums, batch.loss_fn, batch.loss_fn_config)


class SyncExecutor:
    """The simplest executor: one request at a time, each awaited before the next is sent."""

    def __init__(self, training_client: Any):
        self.client = training_client

    async def submit(self, step: int, data: Any, adam_params: Any) -> list[StepResult]:
        started = time.perf_counter()
        batch = as_step_batch(data)
        fwd_bwd = await send(self.client, batch).result_async()
        optim = await self.client.optim_step(adam_params).result_async()
        return [step_result(step, batch, fwd_bwd, optim, adam_params.learning_rate, started)]

    async def drain(self) -> list[StepResult]:
        return []


class PipelinedExecutor:
    """Sends both requests of a step at once and keeps up to ``submit_ahead`` steps in flight
    beyond the one being awaited; steps finish in order. ``submit_ahead = 0`` still puts a
    step's two requests in one cycle but waits for it before sending the next."""

    def __init__(self, training_client: Any, submit_ahead: int):
        self.client = training_client
        self.submit_ahead = submit_ahead
        self.in_flight: deque[tuple[int, StepBatch, float, Any, Any, float]] = deque()

    async def submit(self, step: int, data: Any, adam_params: Any) -> list[StepResult]:
        started = time.perf_counter()
        batch = as_step_batch(data)
        # Both requests go out before anything is awaited: they share one service cycle.
        fwd_bwd = send(self.client, batch)
        optim = self.client.optim_step(adam_params)
        self.in_flight.append((step, batch, adam_params.learning_rate, fwd_bwd, optim, started))
        finished = []
        while len(self.in_flight) > self.submit_ahead:
            finished.append(await self._finish(self.in_flight.popleft()))
        return finished

    async def drain(self) -> list[StepResult]:
        finished = []
        while self.in_flight:
            finished.append(await self._finish(self.in_flight.popleft()))
        return finished

    @staticmethod
    async def _finish(item: tuple[int, StepBatch, float, Any, Any, float]) -> StepResult:
        step, batch, lr, fwd_bwd, optim, started = item
        fwd_bwd_out = await fwd_bwd.result_async()
        optim_out = await optim.result_async()
        return step_result(step, batch, fwd_bwd_out, optim_out, lr, started)


@tinkerplug.hookimpl
def register_config_sections(register: Any) -> None:
    from tinkerplug_executors.settings import TOP_LEVEL_KEYS, ExecutorSettings

    register("executor", ExecutorSettings, top_level=TOP_LEVEL_KEYS)


def settings(config: Any) -> Any:
    """The ``[executor]`` table (its defaults for a config built without the plugins' tables)."""
    try:
        return config.section("executor")
    except KeyError:
        from tinkerplug_executors.settings import ExecutorSettings

        return ExecutorSettings()


@tinkerplug.hookimpl
def make_step_executor(config: Any, training_client: Any) -> StepExecutor | None:
    table = settings(config)
    if table.name == "sync":
        return SyncExecutor(training_client)
    if table.name == "pipelined":
        return PipelinedExecutor(training_client, table.submit_ahead)
    return None
