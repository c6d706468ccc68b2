"""The worker thread that runs a model's requests in submission order, and futures with the SDK's
interface: ``result()``, ``await f``, ``await f.result_async()``."""

from __future__ import annotations

import atexit
import threading
import time
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Callable, Hashable, TypeVar

from tinker.lib.public_interfaces.api_future import AwaitableConcurrentFuture

T = TypeVar("T")


class ClientFuture(AwaitableConcurrentFuture[T]):
    """A future of a client that, like the SDK's back-compat futures, also forwards attribute
    access to the client (``create_lora_training_client(...).forward_backward(...)``)."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.result(), name)


@dataclass
class Batchable:
    """Declares a job mergeable: at its turn, the head jobs of other lanes with an equal ``key``
    run with it as one batch, ``run_together(payloads)`` returning each one's result (or the
    exception it raised) in order."""

    key: Hashable
    payload: Any
    run_together: Callable[[list[Any]], list[Any]]


class LaneQueue:
    """Jobs by lane (``tinkerplug serve`` gives each API key one), taken round-robin across lanes
    and in submission order within a lane: one key's long queue does not hold up another key's
    next request. Jobs put ``last`` come after every lane's (closing sentinels)."""

    def __init__(self) -> None:
        self._lanes: dict[Any, deque] = {}
        self._turns: deque = deque()  # lanes with jobs; the first takes the next turn
        self._last: deque = deque()
        self._cond = threading.Condition()

    def put(self, item: Any, lane: Any = None, last: bool = False) -> None:
        with self._cond:
            if last:
                self._last.append(item)
            else:
                if lane not in self._lanes:
                    self._lanes[lane] = deque()
                    self._turns.append(lane)
                self._lanes[lane].append(item)
            self._cond.notify()

    def get(self) -> Any:
        return self.get_batch(0)[0]

    def get_batch(self, most: int) -> list[Any]:
        """The next lane's head job and, when it is mergeable (a ``Batchable`` last in the
        tuple) and ``most`` > 1, the head jobs of other lanes with the same key, up to ``most``
        in all; each lane that gave one goes to the back of the line. Only heads are taken, so
        every lane keeps its order."""
        with self._cond:
            while not self._turns and not self._last:
                self._cond.wait()
            if not self._turns:
                return [self._last.popleft()]
            taken = [self._pop(self._turns.popleft())]
            key = _merge_key(taken[0])
            if key is not None and most > 1:
                for lane in list(self._turns):
                    if len(taken) >= most:
                        break
                    if _merge_key(self._lanes[lane][0]) == key:
                        self._turns.remove(lane)
                        taken.append(self._pop(lane))
            return taken

    def _pop(self, lane: Any) -> Any:
        jobs = self._lanes[lane]
        item = jobs.popleft()
        if jobs:
            self._turns.append(lane)  # to the back of the line
        else:
            del self._lanes[lane]
        return item


def _merge_key(item: Any) -> Hashable | None:
    batch = item[-1] if isinstance(item, tuple) else None
    return batch.key if isinstance(batch, Batchable) else None


class Worker:
    """One thread that runs jobs in submission order per lane, like the service runs a client's
    requests (one lane unless the caller names lanes: then round-robin across them).

    Ordering is what makes pipelining correct: ``forward_backward`` for step n+1 may be submitted
    before step n's ``optim_step`` has run, and a ``save_state`` captures exactly the updates
    submitted before it.
    """

    def __init__(self, name: str = "tinkerplug-local"):
        self._jobs = LaneQueue()
        self._exiting = False
        self._refusal: BaseException | None = None  # set by refuse(): every later job fails with it
        self.batch_most = 1  # jobs run as one batch at most (1: never merged; host.py sets it)
        self.batches = 0  # batches of several jobs run, and the jobs in them (``/metrics``)
        self.batched_jobs = 0
        self.busy_seconds = 0.0  # wall time spent running jobs (``/metrics``: how loaded the model is)
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        # A daemon thread still inside torch when the interpreter finalizes aborts the process
        # ("terminate called without an active exception"): at exit, let the job that is
        # running finish, drop the queued ones, and wait for the thread.
        atexit.register(self._stop_at_exit)

    def submit(self, fn: Callable[[], T], wrapper: type[AwaitableConcurrentFuture] = AwaitableConcurrentFuture,
               lane: Any = None, batch: Batchable | None = None) -> AwaitableConcurrentFuture[T]:
        """Queue ``fn``; jobs of one ``lane`` run in order, lanes take turns. With ``batch`` the
        job may run together with other lanes' head jobs of the same key (``fn`` alone otherwise)."""
        future: Future[T] = Future()
        self._jobs.put((future, fn, batch), lane)
        return wrapper(future)

    def _run(self) -> None:
        while True:
            items = self._jobs.get_batch(self.batch_most)
            if items[0] is None:
                return
            live = [item for item in items if self._starts(item[0])]
            started = time.perf_counter()
            if len(live) == 1:
                _, fn, _ = live[0]
                _deliver(live[0][0], fn)
            elif live:
                self._run_together(live)
            self.busy_seconds += time.perf_counter() - started

    def _starts(self, future: Future) -> bool:
        if self._exiting:
            future.cancel()
        if not future.set_running_or_notify_cancel():
            return False
        if self._refusal is not None:
            future.set_exception(self._refusal)
            return False
        return True

    def _run_together(self, items: list[Any]) -> None:
        self.batches += 1
        self.batched_jobs += len(items)
        try:
            results = items[0][2].run_together([batch.payload for _, _, batch in items])
        except BaseException as exc:  # noqa: BLE001 - a failure of the whole batch reaches each caller
            results = [exc] * len(items)
        for (future, _, _), result in zip(items, results):
            if isinstance(result, BaseException):
                future.set_exception(result)
            else:
                future.set_result(result)

    def refuse(self, error: BaseException) -> None:
        """Fail every job not yet started with ``error`` (a server shutting down); the job that
        is running finishes. Returns once it has."""
        self._refusal = error
        done: Future = Future()
        self._jobs.put((done, lambda: None, None), last=True)
        if threading.current_thread() is not self._thread:
            try:
                done.exception(timeout=600)
            except TimeoutError:
                pass

    def close(self) -> None:
        """Stop after the jobs already submitted."""
        self._jobs.put(None, last=True)

    def _stop_at_exit(self) -> None:
        self._exiting = True
        self._jobs.put(None, last=True)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=60)


def _deliver(future: Future, fn: Callable[[], Any]) -> None:
    try:
        future.set_result(fn())
    except BaseException as exc:  # noqa: BLE001 - delivered to the caller's future
        future.set_exception(exc)


def completed(value: T) -> AwaitableConcurrentFuture[T]:
    future: Future[T] = Future()
    future.set_result(value)
    return AwaitableConcurrentFuture(future)
