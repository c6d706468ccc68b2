"""``--clock-ms``: release training results at clock-cycle boundaries, as the service does.

The service runs training in lock-step cycles of a fixed length shared by its users (Tinker
docs, "Under the Hood"): a request queued when a cycle starts joins that cycle, one arriving
later waits for the next, and its result comes back when the cycle ends. One cycle does one
``forward_backward`` (or ``forward``) and one ``optim_step`` of a model; a second one of either
waits for the next free cycle, in submission order. Other requests (saves, loads) ride along
with the cycle of the request before them. So a loop that waits for each result before sending
the next request spends several cycles a step, and one that keeps the next step queued reaches
the limit of one step per cycle: what ``benchmarks/pipelining.py --http`` measures.

The work itself runs at once on the local backend; only the answer waits for the cycle's end.
"""

from __future__ import annotations

import threading
import time

STEP_REQUESTS = ("forward", "forward_backward")


class ModelClock:
    """Assigns each request of one model a cycle, in submission order."""

    def __init__(self, cycle_s: float, t0: float):
        self.cycle_s = cycle_s
        self.t0 = t0  # shared by every model of a server: one clock, as on the service
        self._cycle = -1
        self._has_step = False
        self._has_optim = False
        self._lock = threading.Lock()

    def release_time(self, request: str) -> float:
        """``time.perf_counter()`` at which the result of ``request`` (submitted now) is due."""
        with self._lock:
            # A request must be queued when a cycle starts: it joins the next one to start.
            upcoming = int((time.perf_counter() - self.t0) // self.cycle_s) + 1
            if upcoming > self._cycle:
                self._start(upcoming)
            busy = (request in STEP_REQUESTS and (self._has_step or self._has_optim)) or (
                request == "optim_step" and self._has_optim
            )
            if busy:
                self._start(self._cycle + 1)
            self._has_step |= request in STEP_REQUESTS
            self._has_optim |= request == "optim_step"
            return self.t0 + (self._cycle + 1) * self.cycle_s

    def _start(self, cycle: int) -> None:
        self._cycle, self._has_step, self._has_optim = cycle, False, False
