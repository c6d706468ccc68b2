"""What a run directory says about its run (``config.json``, ``metrics.jsonl``,
``checkpoints.jsonl``), read without loading the run: for ``runs``, ``show``, ``plot``,
``export`` and the commands that open a saved checkpoint (``eval``, ``chat``)."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinkerplug.errors import TinkerplugError
from tinkerplug.rundir import read_jsonl


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


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
