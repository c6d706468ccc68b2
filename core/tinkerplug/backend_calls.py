"""Waiting on what the backend returns: SDK futures, awaitables or plain values, with its
failures turned into one ``BackendError``."""

from __future__ import annotations

import inspect
from typing import Any, Awaitable, Callable

from tinkerplug.hook_types import StepResult
from tinkerplug.errors import BackendError, TinkerplugError


async def await_result(future: Any) -> Any:
    """Await an SDK future (``result_async``), or take a plain value as is."""
    if hasattr(future, "result_async"):
        return await future.result_async()
    if inspect.isawaitable(future):
        return await future
    return future


def wait_result(future: Any, timeout: float | None = None) -> Any:
    """Block on an SDK future, or take a plain value as is. For code that runs synchronously
    inside an evaluator (``EvalContext.sampling_client``), that is inside a running event loop:
    the SDK's ``result()`` logs a warning with a stack trace there, so this blocks on the
    future's ``concurrent.futures.Future`` (``future()``, the SDK's way for blocking code).
    ``timeout`` (seconds): ``TimeoutError`` when the backend has not answered by then."""
    if not hasattr(future, "result_async"):
        return future
    return future.future().result(timeout) if hasattr(future, "future") else future.result(timeout)


async def backend_call(make: Callable[[], Any], what: str, hint: str | None = None) -> Any:
    """Call the backend and await the result; its failures become one ``BackendError``."""
    try:
        return await await_result(make())
    except TinkerplugError:
        raise
    except Exception as exc:
        raise BackendError(f"{what}: {type(exc).__name__}: {exc}", hint=hint) from exc


async def executor_call(awaitable: Awaitable[list[StepResult]]) -> list[StepResult]:
    """Await a ``StepExecutor`` call; a failed step becomes a ``BackendError``."""
    try:
        return await awaitable
    except TinkerplugError:
        raise
    except Exception as exc:
        raise BackendError(f"training step failed: {type(exc).__name__}: {exc}") from exc
