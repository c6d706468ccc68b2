"""The run directory: refuse to clobber it, and the crash-safe ``checkpoints.jsonl``."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tinkerplug.context import CheckpointRecord
from tinkerplug.errors import TinkerplugError

CONFIG_JSON = "config.json"
CHECKPOINTS_JSONL = "checkpoints.jsonl"
METRICS_JSONL = "metrics.jsonl"


def prepare_run_dir(run_dir: Path, resume: bool, resume_command: str) -> None:
    """Create ``run_dir``; an existing non-empty one is only reused with ``--resume``."""
    if run_dir.exists() and not run_dir.is_dir():
        raise TinkerplugError(f"run_dir {run_dir} exists and is not a directory")
    has_files = run_dir.is_dir() and any(run_dir.iterdir())
    if has_files and not resume:
        raise TinkerplugError(
            f"run directory {run_dir} already exists and is not empty; nothing in it was touched",
            hint=f"to continue that run: {resume_command}\n"
            f"  to start a new one: add --set run_dir=runs/NEW_NAME",
        )
    if resume and not has_files:
        raise TinkerplugError(
            f"--resume: run directory {run_dir} has no run to resume",
            hint="drop --resume to start a new run there",
        )
    run_dir.mkdir(parents=True, exist_ok=True)


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file + rename: a crash leaves the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a torn last line from a crash mid-append
    return rows


def read_checkpoints(run_dir: Path) -> list[CheckpointRecord]:
    return [CheckpointRecord(**row) for row in read_jsonl(run_dir / CHECKPOINTS_JSONL)]


def append_checkpoint(run_dir: Path, record: CheckpointRecord) -> None:
    """Append a row by rewriting the whole (small) file atomically."""
    rows = [r.to_json() for r in read_checkpoints(run_dir)] + [record.to_json()]
    atomic_write_text(run_dir / CHECKPOINTS_JSONL, "".join(json.dumps(r) + "\n" for r in rows))


def last_checkpoint(run_dir: Path) -> CheckpointRecord | None:
    rows = read_checkpoints(run_dir)
    return rows[-1] if rows else None
