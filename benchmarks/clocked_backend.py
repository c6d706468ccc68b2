"""A training client that answers on the Tinker service's clock (FACTS.md, "Clock cycles").

The service trains in lock-step *clock cycles* of a fixed length. Modelled here, per client:

- cycles are ``[t0 + k*C, t0 + (k+1)*C)``; a request must be queued when a cycle starts,
  so it joins the next cycle to start (``joins="next"``, the documented rule: "if you don't
  have a request queued when a cycle starts, you'll miss that cycle"), or, on a kinder
  service, the cycle running when it is submitted (``joins="current"``); its result comes
  back at the end of the cycle it joined;
- one cycle does one ``forward_backward`` followed by one ``optim_step`` (a training step):
  a second ``forward_backward``, or an ``optim_step`` after this cycle's ``optim_step``,
  waits for the next free cycle, in submission order; other requests (``save_state``, ...)
  ride along with the cycle of the request before them.

So a loop that awaits ``forward_backward`` before submitting ``optim_step`` needs four
cycles a step with ``joins="next"`` (two with ``"current"``); one that submits both together
but waits for the result before sending the next step needs two (one); one that keeps step
n+1 queued when step n's cycle ends needs one. The limit is one step per cycle.

The work itself is real: each request goes to the wrapped local ``TrainingClient`` at once
(its worker runs requests in order) and the result is held back until its cycle ends. If the
local computation is still running then, the result comes late and the cycle counts as
overrun (choose a cycle longer than a step's compute; the benchmark prints both).
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

STEP_REQUESTS = ("forward", "forward_backward")


class ServiceClock:
    """Assigns each request a cycle, in submission order, as the service would."""

    def __init__(self, cycle_s: float, joins: str = "next"):
        if joins not in ("next", "current"):
            raise ValueError(f"joins must be 'next' or 'current', not {joins!r}")
        self.cycle_s = cycle_s
        self.joins = joins
        self.t0 = time.perf_counter()
        self.requests = 0
        self.overruns = 0
        self.late_s: list[float] = []
        self._cycle = -1
        self._has_step = False
        self._has_optim = False
        self._lock = threading.Lock()

    def assign(self, request: str) -> int:
        with self._lock:
            self.requests += 1
            current = int((time.perf_counter() - self.t0) // self.cycle_s)
            if self.joins == "next":
                current += 1
            if current > self._cycle:
                self._cycle, self._has_step, self._has_optim = current, False, False
            if request in STEP_REQUESTS and (self._has_step or self._has_optim):
                self._cycle, self._has_step, self._has_optim = self._cycle + 1, False, False
            elif request == "optim_step" and self._has_optim:
                self._cycle, self._has_step, self._has_optim = self._cycle + 1, False, False
            self._has_step |= request in STEP_REQUESTS
            self._has_optim |= request == "optim_step"
            return self._cycle

    def end_of(self, cycle: int) -> float:
        return self.t0 + (cycle + 1) * self.cycle_s

    def record(self, release_at: float, done_at: float) -> None:
        # A few ms of thread wake-up jitter is not an overrun; 5% of a cycle is.
        if done_at > release_at + max(1e-3, 0.05 * self.cycle_s):
            with self._lock:
                self.overruns += 1
                self.late_s.append(done_at - release_at)


class ClockedFuture:
    """The SDK future interface (``result``, ``result_async``, ``await``), released at the end
    of the request's cycle."""

    def __init__(self, inner: Any, clock: ServiceClock, cycle: int):
        self._inner = inner
        self._clock = clock
        self._release_at = clock.end_of(cycle)
        self._recorded = False

    def _note(self) -> None:
        if not self._recorded:
            self._recorded = True
            self._clock.record(self._release_at, time.perf_counter())

    def result(self, timeout: float | None = None) -> Any:
        value = self._inner.result(timeout)
        self._note()
        while (delay := self._release_at - time.perf_counter()) > 0:
            time.sleep(delay)
        return value

    async def result_async(self, timeout: float | None = None) -> Any:
        value = await self._inner.result_async(timeout)
        self._note()
        while (delay := self._release_at - time.perf_counter()) > 0:
            await asyncio.sleep(delay)
        return value

    def __await__(self):
        return self.result_async().__await__()


class ClockedTrainingClient:
    """Wraps a training client; every request that returns a future is put on the clock."""

    CLOCKED = ("forward", "forward_backward", "optim_step", "save_state", "save_weights_for_sampler")

    def __init__(self, client: Any, clock: ServiceClock):
        self._client = client
        self.clock = clock

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._client, name)
        if name not in self.CLOCKED:
            return attr

        def clocked(*args: Any, **kwargs: Any) -> ClockedFuture:
            cycle = self.clock.assign(name)
            return ClockedFuture(attr(*args, **kwargs), self.clock, cycle)

        return clocked
