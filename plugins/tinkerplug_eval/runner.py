"""Evaluate a saved checkpoint: the same ``evaluate`` hooks a run calls at its eval steps, with
the same ``EvalContext`` (a sampling client on the checkpoint's sampler weights, a training
client on its state for ``forward``-based evaluators, created only if one asks).

Results go to ``RUN_DIR/evals/step-N.json``: its ``metrics`` hold the latest value of every
metric evaluated at that step, its ``history`` every evaluation (nothing is overwritten).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from tinkerplug.errors import TinkerplugError

EVALS_DIR = "evals"
TASKS_TABLE = "inspect"  # --task FILE@TASK sets [inspect] tasks


@dataclass
class EvalResult:
    run_dir: Path
    step: int
    sampler_path: str
    metrics: dict[str, float]
    failed: list[str] = field(default_factory=list)
    path: Path | None = None


async def evaluate_checkpoint(
    run_dir: Path, step: int | None, tasks: tuple[str, ...], overrides: tuple[str, ...], plugin_options: tuple[str, ...]
) -> EvalResult:
    """The core's ``evaluate_checkpoint`` (every evaluator, or on ``tasks`` only the one of
    the plugin that owns the ``[inspect]`` table: its ``tasks`` key is the contract, not a
    plugin name), then the results file."""
    from tinkerplug import evaluation

    overrides = (*overrides, *_task_overrides(tasks))
    record, metrics = await evaluation.evaluate_checkpoint(
        Path(run_dir), step, overrides, plugin_options, only_table=TASKS_TABLE if tasks else None
    )
    ran = {key.removeprefix("time/eval/").removesuffix("_s") for key in metrics if key.startswith("time/eval/")}
    results = {k: v for k, v in metrics.items() if k.startswith("eval/")}
    if not results:
        raise TinkerplugError(
            f"no evaluator returned a metric for {run_dir} (step {record.step})",
            hint="the run has no held-out data or Inspect tasks: add --set data.heldout=FILE or --task FILE@TASK",
        )
    result = EvalResult(Path(run_dir).resolve(), record.step, record.sampler_path, metrics)
    result.failed = sorted(_evaluator_names(run_dir, plugin_options, tasks) - ran)
    result.path = write_results(result, overrides)
    return result


def _evaluator_names(run_dir: Path, plugin_options: tuple[str, ...], tasks: tuple[str, ...]) -> set[str]:
    """The plugins whose ``evaluate`` should have run (those that raised lack a timing)."""
    from tinkerplug.assemble import load_saved_run
    from tinkerplug.evaluation import table_owner

    _, plugins = load_saved_run(Path(run_dir).resolve(), (), plugin_options)
    if tasks:
        return {table_owner(plugins, TASKS_TABLE)}
    return {name for name, _ in plugins.evaluators()}


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
    return [f"{TASKS_TABLE}.tasks={json.dumps(specs)}"]


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
