"""``tinkerplug runs [DIR]`` lists run directories; ``tinkerplug show RUN_DIR`` describes one.

Both only read the files a run leaves behind (``config.json``, ``metrics.jsonl``,
``checkpoints.jsonl``), so they work on finished, crashed and still-running runs alike.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import click

from tinkerplug.errors import TinkerplugError
from tinkerplug.run_info import RunInfo, is_run_dir, read_run

# The keys `show` prints from config.json, in this order.
SUMMARY_KEYS = (
    "objective", "init_from", "base_model", "backend", "renderer", "lora_rank", "learning_rate", "use_recommended_lr",
    "lr_schedule", "warmup_steps", "warmup_ratio", "min_lr", "batch_size", "num_steps",
    "num_epochs", "max_length", "loss_reduction", "eval_every", "save_every", "executor", "seed",
    "schedule",  # run dirs made before [schedule] hold its keys at the top level (above)
)


def find_runs(directory: Path) -> list[RunInfo]:
    """Run dirs at ``directory`` and below it (a run dir's own subdirectories are skipped)."""
    if is_run_dir(directory):
        return [read_run(directory)]
    found = []
    if directory.is_dir():
        for child in sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith(".")):
            found.extend(find_runs(child))
    return found


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _main_eval(evals: dict[str, float]) -> tuple[str, float] | None:
    """The eval metric `runs` shows: the first one that is not a count or a timing."""
    for key, value in evals.items():
        if not key.endswith(("/n", "_s", "/stderr")):
            return key.removeprefix("eval/"), value
    return None


def run_row(info: RunInfo, root: Path) -> dict[str, Any]:
    step, evals = info.last_evals()
    checkpoint = info.last_checkpoint
    try:
        name = str(info.path.relative_to(root.resolve())) or info.path.name
    except ValueError:
        name = str(info.path)
    return {
        "run": name if name != "." else info.path.name,
        "path": str(info.path),
        "base_model": info.config.get("base_model"),
        "backend": info.config.get("backend"),
        "steps_done": info.steps_done,
        "total_steps": info.total_steps,
        "last_loss": info.last_loss,
        "last_eval_step": step,
        "last_eval": evals,
        "last_checkpoint_step": checkpoint["step"] if checkpoint else None,
    }


@click.command("runs")
@click.argument("directory", required=False, default="runs", type=click.Path(file_okay=False, path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def runs(directory: Path, as_json: bool) -> None:
    """List the runs under DIRECTORY (default ./runs): steps, last loss, eval, checkpoint."""
    if not directory.is_dir():
        raise TinkerplugError(f"{directory} is not a directory", hint="pass the parent of your run dirs, e.g. `tinkerplug runs runs/`")
    rows = [run_row(info, directory) for info in find_runs(directory)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo(f"no runs under {directory}")
        return
    from rich.table import Table

    table = Table(title=f"runs under {directory}")
    for column, justify in (("run", "left"), ("model", "left"), ("steps", "right"), ("last loss", "right"), ("last eval", "left"), ("checkpoint", "right")):
        table.add_column(column, justify=justify, overflow="fold")  # type: ignore[arg-type]  # wrap, never cut
    for row in rows:
        main = _main_eval(row["last_eval"])
        shown = f"{main[0]}={main[1]:.4g} @ {row['last_eval_step']}" if main else "-"
        table.add_row(
            row["run"],
            str(row["base_model"] or "-"),
            f"{row['steps_done']}/{row['total_steps']}",
            _fmt(row["last_loss"]),
            shown,
            _fmt(row["last_checkpoint_step"]),
        )
    _console().print(table)


def _console() -> Any:
    """A terminal's own width (cells wrap to fit it); piped output is not cut at 80 columns."""
    import sys

    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=1000)


@click.command("show")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def show(run_dir: Path, as_json: bool) -> None:
    """Print a run's config summary, last metrics and checkpoints."""
    info = read_run(run_dir)
    step, evals = info.last_evals()
    last = info.steps[-1] if info.steps else {}
    data = {
        "path": str(info.path),
        "config": {k: info.config[k] for k in SUMMARY_KEYS if info.config.get(k) is not None},
        "data": info.config.get("data", {}),
        "steps_done": info.steps_done,
        "total_steps": info.total_steps,
        "last_step": {k: v for k, v in last.items() if not k.startswith("eval/")},
        "last_eval_step": step,
        "last_eval": evals,
        "checkpoints": info.checkpoints,
    }
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    echo = click.echo
    echo(f"run {info.path}")
    echo(f"  steps: {info.steps_done}/{info.total_steps}")
    echo("config:")
    for key, value in data["config"].items():
        echo(f"  {key} = {_fmt(value)}")
    for key, value in data["data"].items():
        if value:
            echo(f"  data.{key} = {value}")
    if last:
        echo(f"last step ({last['step']}):")
        for key in ("train/loss", "lr", "train/trained_tokens", "time/step_s"):
            if key in last:
                echo(f"  {key} = {_fmt(last[key])}")
    if evals:
        echo(f"last eval (step {step}):")
        for key, value in evals.items():
            echo(f"  {key.removeprefix('eval/')} = {_fmt(value)}")
    echo(f"checkpoints ({len(info.checkpoints)}):" if info.checkpoints else "checkpoints: none")
    for record in info.checkpoints:
        final = "  (final)" if record.get("final") else "  (removed by [retention])" if record.get("removed") else ""
        echo(f"  step {record['step']}: {record.get('state_path')}{final}")
        echo(f"    sampler: {record.get('sampler_path')}")
