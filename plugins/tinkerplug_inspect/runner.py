"""Run Inspect tasks on one sampling client and turn every scorer's every metric into a flat
``{"<task>/<scorer>/<metric>": value}`` dict (the cookbook's bridge keeps only the first scorer)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from pathlib import Path
from typing import Any, AsyncIterator

from tinkerplug_inspect.tasks import metric_prefixes

# Inspect allows one eval_async per process; a threading lock, polled, works across event
# loops and threads (an asyncio.Lock is bound to one loop) and is safe to cancel while waiting.
_EVAL_LOCK = threading.Lock()


@contextlib.asynccontextmanager
async def one_eval_at_a_time() -> AsyncIterator[None]:
    while not _EVAL_LOCK.acquire(blocking=False):
        await asyncio.sleep(0.02)
    try:
        yield
    finally:
        _EVAL_LOCK.release()


def quiet_display() -> None:
    """Make Inspect print nothing unless the user asked for a display.

    ``eval_async`` has no ``display`` argument: it keeps the process-wide display type, or sets
    "plain" when none is set yet. Initialise it first from ``INSPECT_DISPLAY`` (default "none"),
    through the public ``display_type()``, which reads that variable.
    """
    if "INSPECT_DISPLAY" in os.environ:
        from inspect_ai.util import display_type

        display_type()
        return
    os.environ["INSPECT_DISPLAY"] = "none"
    try:
        from inspect_ai.util import display_type

        display_type()
    finally:
        del os.environ["INSPECT_DISPLAY"]


def ensure_inspect_data_dir(fallback: Path) -> None:
    """Inspect writes trace files under its data dir (``~/.local/share/inspect_ai``) and fails
    when that cannot be created (read-only or missing home in CI and sandboxes); then point
    ``XDG_DATA_HOME``, which it honours, at ``fallback``."""
    from platformdirs import user_data_path

    try:
        traces = user_data_path("inspect_ai") / "traces"
        traces.mkdir(parents=True, exist_ok=True)
        if os.access(traces, os.W_OK):
            return
    except OSError:
        pass
    fallback.mkdir(parents=True, exist_ok=True)
    os.environ["XDG_DATA_HOME"] = str(fallback)


async def run_tasks(
    specs: list[str],
    *,
    sampling_client: Any,
    renderer: Any,
    model_name: str,
    log_dir: Path,
    limit: int | None,
    temperature: float,
    max_tokens: int,
    seed: int | None,
    max_connections: int,
    task_args: dict[str, Any],
    metadata: dict[str, Any],
    tags: list[str],
) -> dict[str, float]:
    from inspect_ai import eval_async
    from inspect_ai.model import GenerateConfig, Model

    from tinkerplug_inspect.model_api import SamplingClientAPI

    generate = GenerateConfig(
        temperature=temperature, max_tokens=max_tokens, seed=seed, max_connections=max_connections
    )
    api = SamplingClientAPI(model_name, sampling_client, renderer, connections=max_connections, config=generate)
    quiet_display()
    ensure_inspect_data_dir(log_dir / ".inspect_data")
    async with one_eval_at_a_time():
        logs = await eval_async(
            tasks=specs,
            model=Model(api=api, config=generate),
            task_args=task_args,
            limit=limit,
            log_dir=str(log_dir),
            # every sample of every task in flight at once: the backend batches them
            max_tasks=max(1, len(specs)),
            max_samples=max_connections,
            retry_on_error=0,  # the SDK retries requests itself
            ctl_server=False,  # no control socket for an eval inside a training run
            score_display=False,
            log_realtime=False,  # no per-sample event database: a whole eval is a few seconds
            metadata=metadata,
            tags=tags,
            **generate.model_dump(exclude_none=True),
        )
    return metrics_of(logs)


def metrics_of(logs: list[Any]) -> dict[str, float]:
    """``{"<task>/<scorer>/<metric>": value}`` for every scorer and metric of every log; a task
    that did not finish raises, naming the task and its log."""
    failed = [log for log in logs if log.status != "success"]
    if failed:
        log = failed[0]
        reason = log.error.message if log.error is not None else log.status
        raise RuntimeError(f"Inspect task {log.eval.task} {log.status}: {reason} (log: {log.location})")
    metrics: dict[str, float] = {}
    for prefix, log in zip(metric_prefixes([log.eval.task for log in logs]), logs):
        for score in (log.results.scores if log.results else None) or []:
            for name, metric in score.metrics.items():
                metrics[f"{prefix}/{score.name}/{name}"] = float(metric.value)
    return metrics
