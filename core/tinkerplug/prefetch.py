"""Work ahead in a background thread: items ``produce(start)``, ``produce(start + 1)``, ...
wait in a bounded queue, so the consumer rarely waits and memory holds ``ahead`` items at most.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from typing import Any, Callable, Iterator


class Prefetcher:
    """``get(i)`` returns ``produce(i)``, computed ahead in order from ``start`` to ``stop``.

    An error in ``produce`` is raised by the ``get`` of that item. ``paused()`` holds the
    thread between items (e.g. while evaluators use the tokenizer the renderer also uses).
    """

    def __init__(self, produce: Callable[[int], Any], start: int, stop: int, ahead: int = 8):
        self._produce = produce
        self._next = start
        self._stop = stop
        self._queue: queue.Queue[tuple[int, Any, BaseException | None]] = queue.Queue(maxsize=max(1, ahead))
        self._closing = threading.Event()
        self._turn = threading.Lock()  # held while an item is produced, and while paused
        self._thread = threading.Thread(target=self._run, args=(start,), name="tinkerplug-prefetch", daemon=True)
        self._thread.start()

    def _run(self, start: int) -> None:
        for index in range(start, self._stop):
            with self._turn:
                if self._closing.is_set():
                    return
                try:
                    item, error = self._produce(index), None
                except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                    item, error = None, exc
            while not self._closing.is_set():
                try:
                    self._queue.put((index, item, error), timeout=0.1)
                    break
                except queue.Full:
                    continue
            if error is not None:
                return

    def get(self, index: int) -> Any:
        """Item ``index``; items must be asked for in order (anything else is produced here)."""
        if index != self._next or self._closing.is_set():
            return self._produce(index)
        got, item, error = self._queue.get()
        self._next += 1
        if error is not None:
            raise error
        assert got == index, (got, index)
        return item

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        with self._turn:
            yield

    def close(self) -> None:
        self._closing.set()
        self._thread.join(timeout=30)
