"""``RUN_DIR/metrics.jsonl``: one JSON object per step. On resume, rows from the checkpoint step
on are dropped first (atomically), so replayed steps replace rather than duplicate them.

The open file belongs to one run: ``on_run_start`` registers a ``MetricsFile`` for the run
(``run.plugins.register_for_run``), whose hooks write and close it (pytest's pattern: state on
a registered object, not in module globals)."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Mapping

import tinkerplug
from tinkerplug.rundir import METRICS_JSONL, atomic_write_text, read_jsonl


class MetricsFile:
    """The metrics file of one run, open for appending."""

    def __init__(self, path: Path):
        self.file = path.open("a", encoding="utf-8")

    @tinkerplug.hookimpl
    def log_metrics(self, step: int, metrics: Mapping[str, Any]) -> None:
        row = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
        self.file.write(json.dumps(row) + "\n")
        self.file.flush()

    @tinkerplug.hookimpl
    def on_run_end(self) -> None:
        self.file.close()


@tinkerplug.hookimpl
def on_run_start(run: Any) -> None:
    path = run.run_dir / METRICS_JSONL
    if path.exists():
        kept = [row for row in read_jsonl(path) if row.get("step", -1) < run.start_step]
        atomic_write_text(path, "".join(json.dumps(row) + "\n" for row in kept))
    run.plugins.register_for_run(MetricsFile(path), "jsonl:metrics-file")
