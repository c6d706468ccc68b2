"""Graceful shutdown: on SIGTERM (or Ctrl-C) the server stops taking work (503), lets queued
work finish for up to ``--shutdown-timeout`` seconds, fails what is left with a clear status,
gives clients a moment to collect their results, then exits. A second Ctrl-C exits at once."""

from __future__ import annotations

import sys
import threading
import time
from typing import Any

SHUTDOWN_MESSAGE = ("tinkerplug serve shut down before this request ran: send it again once the server is "
                    "back (checkpoints saved before are kept)")
COLLECT_S = 5.0  # after draining: time for clients to fetch the results and failures


class ServerShutDown(RuntimeError):
    """What a request still queued at shutdown fails with."""


def drain(state: Any, timeout_s: float) -> tuple[int, int]:
    """Stop taking work, wait for the queue, fail the rest. (finished, failed) request counts."""
    state.draining = True
    queued = len(state.futures.unfinished())
    deadline = time.monotonic() + timeout_s
    while state.futures.unfinished() and time.monotonic() < deadline:
        time.sleep(0.05)
    left = state.futures.unfinished()
    error = ServerShutDown(SHUTDOWN_MESSAGE)
    for host in state.service.hosts():
        host.worker.refuse(error)  # the running job finishes; the queued ones fail
    for pending in state.futures.unfinished():  # e.g. samples whose batch job was refused
        try:
            pending.future.set_exception(error)
        except Exception:  # noqa: BLE001 - it finished in between
            pass
    failed = sum(isinstance(p.future.exception(), ServerShutDown) for p in left)
    return queued - failed, failed


def wait_for_collection(state: Any, timeout_s: float = COLLECT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while state.futures.uncollected() and time.monotonic() < deadline:
        time.sleep(0.05)


def draining_server(config: Any, state: Any, timeout_s: float) -> Any:
    """A ``uvicorn.Server`` whose first exit signal drains the queue before it stops."""
    import uvicorn

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            if state.draining:  # a second signal: out now
                self.force_exit = True
                return super().handle_exit(sig, frame)
            state.draining = True
            if hasattr(self, "_captured_signals"):  # uvicorn re-raises it after its shutdown: exit status says SIGTERM
                self._captured_signals.append(sig)
            threading.Thread(target=self._drain_then_exit, name="tinkerplug-drain", daemon=True).start()

        def _drain_then_exit(self) -> None:
            finished, failed = drain(state, timeout_s)
            print(f"tinkerplug serve: shutting down: {finished} queued requests finished, {failed} failed "
                  f"(\"{SHUTDOWN_MESSAGE[:40]}...\")", file=sys.stderr, flush=True)
            wait_for_collection(state)
            self.should_exit = True

    return DrainingServer(config)
