"""Weights & Biases logging, on when the config has a ``[wandb]`` table.

The run's resolved config (``config.json``: no secrets, the config refuses them) is the W&B
config; every metrics row is logged at its step; eval metrics also go to a table
(``eval/table``, one row per eval step) and the final ones to the run summary. The W&B run id
is kept in ``RUN_DIR/wandb.json``, so ``--resume`` continues the same W&B run. W&B cannot
replace logged points, so on resume the steps it already has are skipped (the replayed steps
compute the same values) rather than logged twice. The W&B run belongs to one tinkerplug run:
``on_run_start`` registers a ``RunLogger`` for it (``run.plugins.register_for_run``).
"""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import tinkerplug

if TYPE_CHECKING:
    from tinkerplug_wandb.settings import WandbSettings

STATE_FILE = "wandb.json"

@tinkerplug.hookimpl
def register_config_sections(register: Any) -> None:
    from tinkerplug_wandb.settings import WandbSettings

    register("wandb", WandbSettings)


@tinkerplug.hookimpl
def on_run_start(run: Any) -> None:
    settings: WandbSettings = run.config.section("wandb")
    if not settings.enabled:
        return
    import wandb

    state_path = run.run_dir / STATE_FILE
    state = json.loads(state_path.read_text()) if state_path.is_file() else {}
    if "id" not in state:
        state = {"id": uuid.uuid4().hex[:12], "last_step": -1}
    wandb_run = wandb.init(
        project=settings.project,
        entity=settings.entity,
        name=settings.name or run.run_dir.name,
        group=settings.group,
        tags=settings.tags or None,
        notes=settings.notes,
        mode=settings.mode,
        dir=str(run.run_dir),
        id=state["id"],
        resume="allow",
        config=run.config.to_json(),
    )
    logger = RunLogger(wandb_run, state_path, state)
    logger.save_state()
    run.plugins.register_for_run(logger, "wandb:run")


class RunLogger:
    """One W&B run, with the state that lets a resume continue it (``wandb.json``)."""

    def __init__(self, wandb_run: Any, state_path: Path, state: dict[str, Any]):
        self.run, self.state_path, self.state = wandb_run, state_path, state
        self.eval_rows: list[dict[str, Any]] = state.setdefault("eval_rows", [])

    def save_state(self) -> None:
        # Plain write, no fsync: at worst a crash forgets a few logged steps, which then are
        # skipped by W&B as out of order, as a replay would be.
        self.state_path.write_text(json.dumps(self.state) + "\n", encoding="utf-8")

    @tinkerplug.hookimpl
    def log_metrics(self, step: int, metrics: Mapping[str, Any]) -> None:
        if step <= self.state["last_step"]:
            return
        values = {k: v for k, v in metrics.items() if k != "step" and _number(v)}
        evals = {k: v for k, v in values.items() if k.startswith("eval/")}
        if evals:
            import wandb

            self.eval_rows.append({"step": step, **evals})  # kept in wandb.json: a resumed table is whole
            columns = ["step", *sorted({k for row in self.eval_rows for k in row if k != "step"})]
            rows = [[row.get(c) for c in columns] for row in self.eval_rows]
            values["eval/table"] = wandb.Table(columns=columns, data=rows)
        self.run.log(values, step=step)
        self.state["last_step"] = step
        self.save_state()

    @tinkerplug.hookimpl
    def on_run_end(self, summary: Mapping[str, Any]) -> None:
        for key, value in (summary.get("eval") or {}).items():
            if _number(value.get("last")):
                self.run.summary[key] = value["last"]
        for key in ("steps_run", "interrupted", "train/loss_last"):
            if key in summary and summary[key] is not None:
                self.run.summary[key] = summary[key]
        self.run.finish(exit_code=1 if summary.get("error") else 0)


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
