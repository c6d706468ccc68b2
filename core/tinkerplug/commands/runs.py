"""``tinkerplug runs [DIR]`` lists run directories; ``tinkerplug show RUN_DIR`` describes one.

Both only read the files a run leaves behind (``config.json``, ``metrics.jsonl``,
``checkpoints.jsonl``), so they work on finished, crashed and still-running runs alike.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from tinkerplug.errors import TinkerplugError

# The keys `show` prints from config.json, in this order.
SUMMARY_KEYS = (
    "base_model", "backend", "renderer", "lora_rank", "learning_rate", "use_recommended_lr",
    "lr_schedule", "warmup_steps", "warmup_ratio", "min_lr", "batch_size", "num_steps",
    "num_epochs", "max_length", "loss_reduction", "eval_every", "save_every", "executor", "seed",
)


@dataclass
class RunInfo:
    """What a run directory says about its run."""

    path: Path
    config: dict[str, Any]
    metrics: list[dict[str, Any]]
    checkpoints: list[dict[str, Any]]
    steps: list[dict[str, Any]] = field(init=False)  # rows of finished optimizer steps

    def __post_init__(self) -> None:
        self.steps = [row for row in self.metrics if row.get("train/loss") is not None or "lr" in row]

    @property
    def steps_done(self) -> int:
        return max((row["step"] + 1 for row in self.steps), default=0)

    @property
    def total_steps(self) -> str:
        if self.config.get("num_steps"):
            return str(self.config["num_steps"])
        if self.config.get("num_epochs"):
            return f"{self.config['num_epochs']} ep"
        return "?"

    @property
    def last_loss(self) -> float | None:
        losses = [row["train/loss"] for row in self.steps if _finite(row.get("train/loss"))]
        return losses[-1] if losses else None

    def eval_keys(self) -> list[str]:
        """Every ``eval/...`` metric the run logged, in first-seen order."""
        keys: dict[str, None] = {}
        for row in self.metrics:
            keys.update((k, None) for k in row if k.startswith("eval/"))
        return list(keys)

    def last_evals(self) -> tuple[int | None, dict[str, float]]:
        """(step, metrics) of the last row that has evals."""
        for row in reversed(self.metrics):
            evals = {k: v for k, v in row.items() if k.startswith("eval/")}
            if evals:
                return row["step"], evals
        return None, {}

    @property
    def last_checkpoint(self) -> dict[str, Any] | None:
        return self.checkpoints[-1] if self.checkpoints else None


def is_run_dir(path: Path) -> bool:
    if not path.is_dir():
        return False
    if any((path / name).is_file() for name in ("metrics.jsonl", "checkpoints.jsonl")):
        return True
    # A Hugging Face model dir (a `tinkerplug export --merge` output) has a config.json too.
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        return False
    except (OSError, ValueError):
        return True  # read_run reports the broken file
    return isinstance(config, dict) and "base_model" in config


def read_run(path: Path) -> RunInfo:
    """Read a run dir; a directory that holds no run is a clear error."""
    from tinkerplug.rundir import read_jsonl

    path = Path(path)
    if not is_run_dir(path):
        found = "does not exist" if not path.exists() else "has no run config.json, metrics.jsonl or checkpoints.jsonl"
        raise TinkerplugError(
            f"{path} is not a run directory: it {found}",
            hint="a run directory is the run_dir of `tinkerplug run`; `tinkerplug runs` lists those under ./runs",
        )
    config_file = path / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
    except json.JSONDecodeError as exc:
        raise TinkerplugError(f"{config_file} is not valid JSON: {exc}") from None
    metrics = read_jsonl(path / "metrics.jsonl")
    # Rows are unique per step (resumed steps replace theirs); keep the last one of each anyway.
    by_step: dict[int, dict[str, Any]] = {}
    for row in metrics:
        if isinstance(row.get("step"), int):
            by_step.setdefault(row["step"], {}).update(row)
    checkpoints = read_jsonl(path / "checkpoints.jsonl")
    return RunInfo(path.resolve(), config, [by_step[s] for s in sorted(by_step)], checkpoints)


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
