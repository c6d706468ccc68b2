"""The worker thread that runs a model's requests in submission order, and futures with the SDK's
interface: ``result()``, ``await f``, ``await f.result_async()``."""

from __future__ import annotations

import atexit
import threading
import time
from collections import deque
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass
from typing import Any, Callable, Hashable, NamedTuple, TypeVar

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
    next request. Jobs put ``last`` come after every lane's (closing sentinels).

    With several compute threads, a lane's next job waits until its running one is done (the
    order is kept), and only ``shared`` jobs (each touching its own adapter only) run side by
    side; any other job waits until nothing runs and starts before anything else does."""

    def __init__(self, threads: int = 1) -> None:
        self._lanes: dict[Any, deque] = {}
        self._turns: deque = deque()  # lanes with jobs; the first takes the next turn
        self._last: deque = deque()
        self._cond = threading.Condition()
        self.threads = threads
        self._busy: set[Any] = set()  # lanes with a job running
        self._running = 0  # batches running
        self._alone = False  # the running batch is not shared

    def put(self, item: Any, lane: Any = None, last: bool = False) -> None:
        with self._cond:
            if last:
                self._last.append(item)
            else:
                if lane not in self._lanes:
                    self._lanes[lane] = deque()
                    self._turns.append(lane)
                self._lanes[lane].append(item)
            self._cond.notify_all()

    def get_batch(self, most: int) -> tuple[list[Any], list[Any]]:
        """The next lane's head job and, when it is mergeable (a ``Batchable``) and ``most`` > 1,
        the head jobs of other lanes with the same key, up to ``most`` in all (with several
        threads, a share of those waiting that leaves the other threads some); each lane that
        gave one goes to the back of the line. Only heads are taken, so every lane keeps its
        order. Returns the jobs and their lanes; call ``done(lanes)`` once they have run."""
        with self._cond:
            while True:
                taken = self._take(most)
                if taken is not None:
                    return taken
                self._cond.wait()

    def running(self) -> int:
        """Batches running now, on all threads."""
        return self._running

    def done(self, lanes: list[Any]) -> None:
        with self._cond:
            self._busy.difference_update(lanes)
            self._running -= 1
            self._alone = False
            self._cond.notify_all()

    def _take(self, most: int) -> tuple[list[Any], list[Any]] | None:
        if self._alone:
            return None
        ready = [lane for lane in self._turns if lane not in self._busy]
        if not ready:
            if self._turns or not self._last or self._running:
                return None
            return self._start([self._last.popleft()], [], alone=True)
        head = self._lanes[ready[0]][0]
        alone = not _shared(head)
        if alone and self._running:
            return None  # it waits for the running batches, and nothing starts before it
        key = _merge_key(head)
        lanes = [ready[0]]
        if key is not None and most > 1:
            same = [lane for lane in ready[1:] if _merge_key(self._lanes[lane][0]) == key]
            lanes += same[: self._share(most, 1 + len(same)) - 1]
        return self._start([self._pop(lane) for lane in lanes], lanes, alone)

    def _share(self, most: int, waiting: int) -> int:
        """How many of ``waiting`` mergeable jobs one batch takes: all (up to ``most``) with one
        thread; with several, an even split over the threads that are free."""
        free = max(1, self.threads - self._running)
        return min(most, -(-waiting // free))

    def _start(self, items: list[Any], lanes: list[Any], alone: bool) -> tuple[list[Any], list[Any]]:
        self._busy.update(lanes)
        self._running += 1
        self._alone = alone
        return items, lanes

    def _pop(self, lane: Any) -> Any:
        jobs = self._lanes[lane]
        item = jobs.popleft()
        self._turns.remove(lane)
        if jobs:
            self._turns.append(lane)  # to the back of the line
        else:
            del self._lanes[lane]
        return item


class Job(NamedTuple):
    future: Future
    fn: Callable[[], Any]
    batch: Batchable | None = None
    shared: bool = False  # may run beside other lanes' shared jobs (``Worker.submit``)


def _merge_key(job: Job | None) -> Hashable | None:
    return job.batch.key if job is not None and job.batch is not None else None


def _shared(job: Job | None) -> bool:
    return job is not None and job.shared


class Worker:
    """Threads that run a model's jobs in submission order per lane, like the service runs a
    client's requests (one lane unless the caller names lanes: then round-robin across them).

    Ordering is what makes pipelining correct: ``forward_backward`` for step n+1 may be submitted
    before step n's ``optim_step`` has run, and a ``save_state`` captures exactly the updates
    submitted before it.

    ``threads`` > 1: jobs of different lanes submitted ``shared`` may run at the same time, on
    as many threads (the CPU's cores otherwise sit idle while one thread runs a small model's
    many small ops); ``on_start()`` runs on each of them before any of them takes a job (to
    size torch's own threads). Everything else runs alone.
    """

    def __init__(self, name: str = "tinkerplug-local", threads: int = 1, on_start: Callable[[], None] | None = None):
        self._jobs = LaneQueue(threads)
        self._exiting = False
        self._refusal: BaseException | None = None  # set by refuse(): every later job fails with it
        self._on_start = on_start
        self._started = threading.Barrier(threads)
        self._stats = threading.Lock()
        self.batch_most = 1  # jobs run as one batch at most (1: never merged; host.py sets it)
        self.batches = 0  # batches of several jobs run, and the jobs in them (``/metrics``)
        self.batched_jobs = 0
        self.side_by_side = 0  # batches that started while another one ran (``/metrics``)
        self.busy_seconds = 0.0  # time spent running jobs, summed over threads (``/metrics``)
        self._threads = [threading.Thread(target=self._run, name=name if i == 0 else f"{name}:{i}", daemon=True)
                         for i in range(threads)]
        for thread in self._threads:
            thread.start()
        # A daemon thread still inside torch when the interpreter finalizes aborts the process
        # ("terminate called without an active exception"): at exit, let the job that is
        # running finish, drop the queued ones, and wait for the thread.
        atexit.register(self._stop_at_exit)

    @property
    def threads(self) -> int:
        return len(self._threads)

    def submit(self, fn: Callable[[], T], wrapper: type[AwaitableConcurrentFuture] = AwaitableConcurrentFuture,
               lane: Any = None, batch: Batchable | None = None, shared: bool = False) -> AwaitableConcurrentFuture[T]:
        """Queue ``fn``; jobs of one ``lane`` run in order, lanes take turns. With ``batch`` the
        job may run together with other lanes' head jobs of the same key (``fn`` alone otherwise).
        ``shared``: it touches only its own lane's state, so it may run beside other lanes' shared
        jobs; a shared ``batch`` always runs through ``run_together`` (a batch of one then)."""
        future: Future[T] = Future()
        self._jobs.put(Job(future, fn, batch, shared and self.threads > 1), lane)
        return wrapper(future)

    def _run(self) -> None:
        if self._on_start is not None:
            self._on_start()
        self._started.wait()
        while True:
            items, lanes = self._jobs.get_batch(self.batch_most)
            if items[0] is None:
                self._jobs.done(lanes)
                return
            started = time.perf_counter()
            try:
                self._run_batch(items)
            finally:
                elapsed = time.perf_counter() - started
                with self._stats:
                    self.busy_seconds += elapsed
                self._jobs.done(lanes)
                del items  # its futures hold results (a sampler): not kept while this thread waits

    def _run_batch(self, items: list[Job]) -> None:
        if self._jobs.running() > 1:
            with self._stats:
                self.side_by_side += 1
        live = [job for job in items if self._starts(job.future)]
        if len(live) == 1 and not (live[0].batch is not None and live[0].shared):
            _deliver(live[0].future, live[0].fn)
        elif live:
            self._run_together(live)

    def _starts(self, future: Future) -> bool:
        if self._exiting:
            future.cancel()
        if not future.set_running_or_notify_cancel():
            return False
        if self._refusal is not None:
            future.set_exception(self._refusal)
            return False
        return True

    def _run_together(self, items: list[Job]) -> None:
        if len(items) > 1:
            with self._stats:
                self.batches += 1
                self.batched_jobs += len(items)
        try:
            results = items[0].batch.run_together([job.batch.payload for job in items])
        except BaseException as exc:  # noqa: BLE001 - a failure of the whole batch reaches each caller
            results = [exc] * len(items)
        for job, result in zip(items, results):
            _settle(job.future, result, failed=isinstance(result, BaseException))

    def refuse(self, error: BaseException) -> None:
        """Fail every job not yet started with ``error`` (a server shutting down); the jobs that
        are running finish. Returns once they have."""
        self._refusal = error
        done: Future = Future()
        self._jobs.put(Job(done, lambda: None), last=True)
        if threading.current_thread() not in self._threads:
            try:
                done.exception(timeout=600)
            except TimeoutError:
                pass

    def close(self) -> None:
        """Stop after the jobs already submitted."""
        for _ in self._threads:
            self._jobs.put(None, last=True)

    def _stop_at_exit(self) -> None:
        self._exiting = True
        self.close()
        if threading.current_thread() not in self._threads:
            for thread in self._threads:
                thread.join(timeout=60)


def _deliver(future: Future, fn: Callable[[], Any]) -> None:
    try:
        result = fn()
    except BaseException as exc:  # noqa: BLE001 - delivered to the caller's future
        _settle(future, exc, failed=True)
    else:
        _settle(future, result)


def _settle(future: Future, result: Any, failed: bool = False) -> None:
    """The job's result (its exception if ``failed``) on its future, unless that is settled
    already (a server shutting down gave up on it): the compute thread must live on."""
    try:
        if failed:
            future.set_exception(result)
        else:
            future.set_result(result)
    except InvalidStateError:
        pass


def completed(value: T) -> AwaitableConcurrentFuture[T]:
    future: Future[T] = Future()
    future.set_result(value)
    return AwaitableConcurrentFuture(future)
