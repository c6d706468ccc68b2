"""Evaluate a saved checkpoint: the same ``evaluate`` hooks a run calls at its eval steps, with
the same ``EvalContext`` (a sampling client on the checkpoint's sampler weights, a training
client on its state for ``forward``-based evaluators, created only if one asks).

Results go to ``RUN_DIR/evals/step-N.json``: its ``metrics`` hold the latest value of every
metric evaluated at that step, its ``history`` every evaluation (nothing is overwritten).
"""

from __future__ import annotations

import inspect
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from tinkerplug.errors import TinkerplugError

EVALS_DIR = "evals"


@dataclass
class EvalResult:
    run_dir: Path
    step: int
    sampler_path: str
    metrics: dict[str, float]
    failed: list[str] = field(default_factory=list)
    path: Path | None = None


class _Lazy:
    """Stands for an object made on first attribute access (a training client: on Tinker, a
    new session; only ``forward``-based evaluators need it)."""

    def __init__(self, make: Any):
        self._make, self._value = make, None

    def __getattr__(self, name: str) -> Any:
        if self._value is None:
            self._value = self._make()
        return getattr(self._value, name)


async def evaluate_checkpoint(
    run_dir: Path, step: int | None, tasks: tuple[str, ...], overrides: tuple[str, ...], plugin_options: tuple[str, ...]
) -> EvalResult:
    from tinkerplug.saved import open_checkpoint

    overrides = (*overrides, *_task_overrides(tasks))
    saved = open_checkpoint(run_dir, step, overrides, plugin_options)
    try:
        metrics, failed = await run_evaluators(saved, only={"inspect"} if tasks else None)
    finally:
        close = getattr(saved.service, "close", None)
        if callable(close):
            close()
    if not metrics and not failed:
        raise TinkerplugError(
            f"no evaluator returned a metric for {saved.run_dir} (step {saved.record.step})",
            hint="the run has no held-out data or Inspect tasks: add --set data.heldout=FILE or --task FILE@TASK",
        )
    result = EvalResult(saved.run_dir, saved.record.step, saved.record.sampler_path, metrics, failed)
    result.path = write_results(result, overrides)
    return result


def _task_overrides(tasks: tuple[str, ...]) -> list[str]:
    """``--task FILE@TASK`` as ``inspect.tasks``, the file made absolute (from the current dir)."""
    if not tasks:
        return []
    specs = []
    for spec in tasks:
        file, sep, name = spec.partition("@")
        if file.endswith(".py"):
            path = Path(file).expanduser().resolve()
            if not path.is_file():
                raise TinkerplugError(f"--task {spec}: {file} not found", hint="write --task path/to/tasks.py@task_name")
            spec = f"{path}{sep}{name}"
        specs.append(spec)
    return [f"inspect.tasks={json.dumps(specs)}"]


async def run_evaluators(saved: Any, only: set[str] | None = None) -> tuple[dict[str, float], list[str]]:
    """Every evaluator (or those of plugins ``only``) on the checkpoint; a failing one is
    reported by plugin name and the others still run (unless ``eval_errors = "raise"``)."""
    from tinkerplug.context import EvalContext
    from tinkerplug.plugins import hook_error

    record, config = saved.record, saved.config
    context = EvalContext(
        step=record.step, renderer=saved.renderer, tokenizer=saved.tokenizer, config=config, run_dir=saved.run_dir,
        open_sampler=lambda: (record.sampler_path, saved.sampling_client),
        training_client=_Lazy(lambda: saved.training_client), plugins=saved.plugins,
    )
    metrics: dict[str, float] = {}
    failed: list[str] = []
    for name, call in saved.plugins.evaluators():
        if only is not None and name not in only:
            continue
        started = time.perf_counter()
        try:
            value = call(context=context)
            if inspect.isawaitable(value):
                value = await value
        except Exception as exc:  # noqa: BLE001 - reported by plugin name
            error = hook_error(name, "evaluate", exc)
            if config.eval_errors == "raise":
                raise error from exc
            click.echo(f"warning: {error.message}", err=True)
            failed.append(name)
            continue
        for key, metric in (value or {}).items():
            metrics[f"eval/{key}"] = float(metric)
        if value:
            metrics[f"time/eval/{name}_s"] = time.perf_counter() - started
    return metrics, failed


def write_results(result: EvalResult, overrides: tuple[str, ...]) -> Path:
    from tinkerplug.rundir import atomic_write_text

    path = result.run_dir / EVALS_DIR / f"step-{result.step}.json"
    path.parent.mkdir(exist_ok=True)
    data = json.loads(path.read_text()) if path.is_file() else {"step": result.step, "metrics": {}, "history": []}
    data["sampler_path"] = result.sampler_path
    data["metrics"].update(result.metrics)
    data["history"].append(
        {"time": time.time(), "metrics": result.metrics, "overrides": list(overrides), "failed": result.failed}
    )
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True) + "\n")
    return path


def print_table(result: EvalResult) -> None:
    click.echo(f"{result.run_dir} step {result.step} ({result.sampler_path})")
    rows = sorted((k, v) for k, v in result.metrics.items() if k.startswith("eval/"))
    wide = max([len(k) for k, _ in rows] + [6])
    click.echo(f"{'metric':<{wide}}  value")
    for key, value in rows:
        click.echo(f"{key:<{wide}}  {value:.4g}")
    click.echo(f"wrote {result.path}")
