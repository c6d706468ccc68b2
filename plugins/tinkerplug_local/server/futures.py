"""Server-side futures: what ``/retrieve_future`` answers for each submitted request.

Every submitting endpoint answers at once with a request id; the work runs on the local
backend's worker (in order per base model). ``retrieve_future`` long-polls: it waits up to
``LONG_POLL_S`` for the result, then answers HTTP 408 with a queue state ("try again"), which
the SDK retries at once, as it does with the service. In clocked mode a result is held back
until the end of the clock cycle its request joined (``clock.py``).

A future belongs to the principal whose request made it: another key asking for it gets the
answer for an unknown id. Its not-yet-done futures are the key's queue (``--max-queued-per-key``).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable

LONG_POLL_S = 20.0  # under the SDK's 45 s read timeout for retrieve_future
# A result is kept this long after it was delivered (a client whose answer was lost on the way
# asks again, after its connection-error backoff) and, undelivered, this long after it finished
# (the SDK polls without a deadline unless the caller gives result(timeout)); never while queued.
KEEP_RETRIEVED_S = 600.0
KEEP_UNRETRIEVED_S = 3600.0

USER_ERRORS = (ValueError, TypeError, KeyError, NotImplementedError, FileNotFoundError, FileExistsError, IndexError)


@dataclass
class Pending:
    future: Future
    encode: Callable[[Any], Any]  # result -> dict (JSON) or bytes (protobuf)
    release_at: float | None = None  # perf_counter time; None: as soon as done
    owner: str = "local"
    kind: str = "request"  # for /metrics
    created: float = field(default_factory=time.monotonic)
    retrieved: float | None = None
    finished: float | None = None  # monotonic time it finished

    def __post_init__(self) -> None:
        self.future.add_done_callback(lambda _: setattr(self, "finished", time.monotonic()))


class FutureTable:
    def __init__(self, observe: Callable[[str, bool, float], None] | None = None) -> None:
        """``observe(kind, failed, seconds)`` is told each request's time to its result."""
        self._pending: dict[str, Pending] = {}
        self._lock = threading.Lock()
        self._observe = observe
        self._unfinished: dict[str, int] = {}  # per owner: kept as futures finish, not counted per request
        self._swept = 0.0  # monotonic time of the last sweep

    def add(self, future: Any, encode: Callable[[Any], Any], release_at: float | None = None, owner: str = "local",
            kind: str = "request") -> str:
        """Track ``future`` (concurrent, or the SDK's ``AwaitableConcurrentFuture``)."""
        if not isinstance(future, Future):
            future = future.future()
        request_id = f"req-{uuid.uuid4().hex}"  # random: never guessed, never one of an earlier process
        with self._lock:
            if time.monotonic() - self._swept >= 1.0:  # it walks every request kept: tens of thousands when busy
                self._sweep()
            self._pending[request_id] = Pending(future, encode, release_at, owner, kind)
            self._unfinished[owner] = self._unfinished.get(owner, 0) + 1
        future.add_done_callback(lambda _: self._finished(owner))
        if self._observe is not None:
            start, observe = time.monotonic(), self._observe
            future.add_done_callback(lambda f: observe(kind, f.cancelled() or f.exception() is not None, time.monotonic() - start))
        return request_id

    def get(self, request_id: str, owner: str) -> Pending | None:
        """The pending request, when ``owner`` made it; None as for an unknown id otherwise."""
        with self._lock:
            pending = self._pending.get(request_id)
        return pending if pending is not None and pending.owner == owner else None

    def queued(self) -> dict[str, int]:
        """Requests not yet done, per owner."""
        with self._lock:
            return {owner: n for owner, n in self._unfinished.items() if n}

    def _finished(self, owner: str) -> None:
        with self._lock:
            self._unfinished[owner] -= 1

    def uncollected(self) -> list[Pending]:
        """Requests done whose result no client has fetched yet."""
        with self._lock:
            return [p for p in self._pending.values() if p.future.done() and p.retrieved is None]

    def unfinished(self) -> list[Pending]:
        with self._lock:
            return [p for p in self._pending.values() if not p.future.done()]

    async def wait(self, pending: Pending, timeout: float = LONG_POLL_S) -> bool:
        """True when the result is ready to be delivered within ``timeout`` seconds."""
        deadline = time.perf_counter() + timeout
        try:
            await asyncio.wait_for(asyncio.shield(asyncio.wrap_future(pending.future)), timeout)
        except asyncio.TimeoutError:
            return False
        except BaseException:  # noqa: BLE001 - a failed request is ready too
            if not pending.future.done():
                raise
        if pending.release_at is not None:
            now = time.perf_counter()
            if pending.release_at > deadline:
                await asyncio.sleep(max(0.0, deadline - now))
                return False
            await asyncio.sleep(max(0.0, pending.release_at - now))
        return True

    def cancel(self, request_id: str, owner: str) -> bool:
        """Cancel ``owner``'s request if it has not started (the SDK asks when a caller stops waiting)."""
        pending = self.get(request_id, owner)
        return pending is not None and pending.future.cancel()

    def mark_retrieved(self, pending: Pending) -> None:
        pending.retrieved = time.monotonic()

    def _sweep(self) -> None:
        """Forget results kept long enough."""
        now = self._swept = time.monotonic()
        stale = [
            rid for rid, p in self._pending.items()
            if (p.retrieved is not None and now - p.retrieved > KEEP_RETRIEVED_S)
            or (p.finished is not None and now - p.finished > KEEP_UNRETRIEVED_S)
        ]
        for rid in stale:
            del self._pending[rid]


def failed(exc: BaseException) -> Future:
    future: Future = Future()
    future.set_exception(exc)
    return future


def then(future: Any, convert: Callable[[Any], Any]) -> Future:
    """A future of ``convert(result)``; ``future`` is a concurrent or SDK-style future."""
    inner = future.future() if hasattr(future, "future") and callable(future.future) else future
    out: Future = Future()

    def done(f: Future) -> None:
        try:
            out.set_result(convert(f.result()))
        except BaseException as exc:  # noqa: BLE001 - delivered through the future
            out.set_exception(exc)

    inner.add_done_callback(done)
    return out


def error_body(exc: BaseException) -> dict[str, str]:
    """The service's failed-request shape (``RequestFailedResponse``)."""
    category = "user" if isinstance(exc, USER_ERRORS) else "server"
    text = str(exc) or type(exc).__name__
    return {"error": f"{type(exc).__name__}: {text}" if category == "server" else text, "category": category}
