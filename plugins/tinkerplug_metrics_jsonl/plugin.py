"""``RUN_DIR/metrics.jsonl``: one JSON object per step. On resume, rows from the checkpoint step
on are dropped first (atomically), so replayed steps replace rather than duplicate them."""

from __future__ import annotations

import json
import math
from typing import Any, Mapping

import tinkerplug
from tinkerplug.rundir import METRICS_JSONL, atomic_write_text, read_jsonl

_files: dict[str, Any] = {}


@tinkerplug.hookimpl
def on_run_start(run: Any) -> None:
    path = run.run_dir / METRICS_JSONL
    if path.exists():
        kept = [row for row in read_jsonl(path) if row.get("step", -1) < run.start_step]
        atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in kept))
    _files[str(run.run_dir)] = path.open("a", encoding="utf-8")


@tinkerplug.hookimpl
def log_metrics(step: int, metrics: Mapping[str, Any], run: Any) -> None:
    f = _files[str(run.run_dir)]
    row = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
    f.write(json.dumps(row) + "\n")
    f.flush()


@tinkerplug.hookimpl
def on_run_end(run: Any, summary: Mapping[str, Any]) -> None:
    f = _files.pop(str(run.run_dir), None)
    if f is not None:
        f.close()
