"""Reporting a stalled run: no training step finished for ``stall_minutes``.

A remote service can stop answering without an error (a lost session, a queue that does not
move); the SDK then waits. The watchdog runs on a thread of its own, so it also fires while
the event loop is blocked in a synchronous call, and it only reports: the run keeps waiting,
and the message says how to stop it and resume from the last checkpoint.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Callable


class StallWatchdog:
    """Calls ``warn(message)`` once per stall: when ``last_progress()`` (a ``perf_counter``
    time) is older than ``minutes``. A step that finishes afterwards re-arms it."""

    def __init__(
        self,
        minutes: float,
        last_progress: Callable[[], float],
        describe: Callable[[float], str],
        warn: Callable[[str], None],
    ):
        self.seconds = minutes * 60.0
        self.last_progress = last_progress
        self.describe = describe
        self.warn = warn
        self.reported: list[float] = []  # idle seconds at each report (tests read it)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "StallWatchdog":
        if self.seconds > 0:
            self._thread = threading.Thread(target=self._watch, name="tinkerplug-stall-watchdog", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _watch(self) -> None:
        poll = min(max(self.seconds / 10.0, 0.05), 10.0)
        reported_for: float | None = None
        while not self._stop.wait(poll):
            last = self.last_progress()
            idle = time.perf_counter() - last
            if idle >= self.seconds and reported_for != last:
                reported_for = last
                self.reported.append(idle)
                self.warn(self.describe(idle))


def stall_message(idle_s: float, last_step: int | None, checkpoint_step: int | None, resume_command: str) -> str:
    done = f"the last step that finished was step {last_step}" if last_step is not None else "no step has finished yet"
    where = (
        f"resume from the last checkpoint (step {checkpoint_step})"
        if checkpoint_step is not None
        else "start again (there is no checkpoint yet)"
    )
    return (
        f"no training step finished for {_duration(idle_s)} ({done}); the backend may be stalled. "
        f"The run keeps waiting. To give up: press Ctrl-C twice, then {where} with:\n  {resume_command}"
    )


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def watch_for_stalls(config: Any, state: Any, warn: Callable[[str], None], resume_command: str) -> StallWatchdog:
    """The watchdog of one training loop: reads the loop's ``LoopState`` (``last_finished``,
    ``history``, ``checkpointed_steps``) and reports through ``warn``."""

    def describe(idle_s: float) -> str:
        steps = [row["step"] for row in list(state.history) if "train/loss" in row]
        checkpoints = set(state.checkpointed_steps)
        return stall_message(
            idle_s, steps[-1] if steps else None, max(checkpoints) if checkpoints else None, resume_command
        )

    return StallWatchdog(config.stall_minutes, lambda: state.last_finished, describe, warn)
