"""The worker thread that runs a model's requests in submission order, and futures with the SDK's
interface: ``result()``, ``await f``, ``await f.result_async()``."""

from __future__ import annotations

import atexit
import queue
import threading
from concurrent.futures import Future
from typing import Any, Callable, TypeVar

from tinker.lib.public_interfaces.api_future import AwaitableConcurrentFuture

T = TypeVar("T")


class ClientFuture(AwaitableConcurrentFuture[T]):
    """A future of a client that, like the SDK's back-compat futures, also forwards attribute
    access to the client (``create_lora_training_client(...).forward_backward(...)``)."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.result(), name)


class Worker:
    """One thread that runs jobs in submission order, like the service runs a client's requests.

    Ordering is what makes pipelining correct: ``forward_backward`` for step n+1 may be submitted
    before step n's ``optim_step`` has run, and a ``save_state`` captures exactly the updates
    submitted before it.
    """

    def __init__(self, name: str = "tinkerplug-local"):
        self._jobs: queue.SimpleQueue[tuple[Future, Callable[[], Any]] | None] = queue.SimpleQueue()
        self._exiting = False
        self._refusal: BaseException | None = None  # set by refuse(): every later job fails with it
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()
        # A daemon thread still inside torch when the interpreter finalizes aborts the process
        # ("terminate called without an active exception"): at exit, let the job that is
        # running finish, drop the queued ones, and wait for the thread.
        atexit.register(self._stop_at_exit)

    def submit(self, fn: Callable[[], T], wrapper: type[AwaitableConcurrentFuture] = AwaitableConcurrentFuture) -> AwaitableConcurrentFuture[T]:
        future: Future[T] = Future()
        self._jobs.put((future, fn))
        return wrapper(future)

    def _run(self) -> None:
        while True:
            item = self._jobs.get()
            if item is None:
                return
            future, fn = item
            if self._exiting:
                future.cancel()
            if not future.set_running_or_notify_cancel():
                continue
            if self._refusal is not None:
                future.set_exception(self._refusal)
                continue
            try:
                future.set_result(fn())
            except BaseException as exc:  # noqa: BLE001 - delivered to the caller's future
                future.set_exception(exc)

    def refuse(self, error: BaseException) -> None:
        """Fail every job not yet started with ``error`` (a server shutting down); the job that
        is running finishes. Returns once it has."""
        self._refusal = error
        done: Future = Future()
        self._jobs.put((done, lambda: None))
        if threading.current_thread() is not self._thread:
            try:
                done.exception(timeout=600)
            except TimeoutError:
                pass

    def close(self) -> None:
        """Stop after the jobs already submitted."""
        self._jobs.put(None)

    def _stop_at_exit(self) -> None:
        self._exiting = True
        self._jobs.put(None)
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout=60)


def completed(value: T) -> AwaitableConcurrentFuture[T]:
    future: Future[T] = Future()
    future.set_result(value)
    return AwaitableConcurrentFuture(future)
