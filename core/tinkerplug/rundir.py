"""The run directory: refuse to clobber it, one process at a time, and the crash-safe
``checkpoints.jsonl``.

Crash safety rests on one rule: every file the loop rewrites is written to a temporary file and
renamed into place (``atomic_write_text``), and a checkpoint row is appended only after the
checkpoint it names is complete on disk. A crash at any instant therefore leaves either the old
``checkpoints.jsonl`` or the new one, and the last row always names a usable checkpoint.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from tinkerplug.hook_types import CheckpointRecord
from tinkerplug.errors import ConfigError, TinkerplugError

CONFIG_JSON = "config.json"
CHECKPOINTS_JSONL = "checkpoints.jsonl"
METRICS_JSONL = "metrics.jsonl"
LOCK_FILE = ".lock"

# Keys that run dirs made before them lack: compared only where the saved config has them.
ADDED_KEYS = ("data_fingerprint.train", "objective", "init_from")


def check_run_dir(run_dir: Path, resume: bool, resume_command: str) -> None:
    """Refuse a non-empty ``run_dir`` without ``resume``, and one that is not a run with it.

    ``resume`` with no run there yet starts a new one, so ``resume = true`` in a config gives
    one command that starts a job and restarts it after a crash or preemption.

    Only looks: nothing is created until the inputs are known to be good, so a bad config or
    data file never leaves a half-made run dir behind that a rerun would then refuse.
    """
    if run_dir.exists() and not run_dir.is_dir():
        raise ConfigError(f"run_dir {run_dir} exists and is not a directory", hint="pick another run_dir")
    has_files = run_dir.is_dir() and any(run_dir.iterdir())
    if has_files and not resume:
        raise TinkerplugError(
            f"run directory {run_dir} already exists and is not empty; nothing in it was touched",
            hint=f"to continue that run: {resume_command}\n"
            f"  to start a new one: add --set run_dir=runs/NEW_NAME",
        )
    if resume and has_files and not (run_dir / CONFIG_JSON).is_file():
        raise TinkerplugError(
            f"--resume: {run_dir} is not a tinkerplug run dir (no {CONFIG_JSON}); nothing in it was touched",
            hint="point run_dir at the run to resume, or pick a new run_dir",
        )


class RunDirLock:
    """An exclusive ``flock`` on ``RUN_DIR/.lock`` for the life of the run: a second process on
    the same run dir (two resumes at once) is refused. The OS drops it when the process dies,
    even by SIGKILL, so a crashed run never leaves a stale lock."""

    def __init__(self, run_dir: Path):
        self.path = run_dir / LOCK_FILE
        self.fd: int | None = None

    def acquire(self) -> "RunDirLock":
        try:
            import fcntl
        except ImportError:  # not POSIX: no locking
            return self
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            holder = self.path.read_text().strip() or "?"
            raise TinkerplugError(
                f"run directory {self.path.parent} is in use by another tinkerplug process (pid {holder})",
                hint="wait for it to finish (or stop it with Ctrl-C), or pick another run_dir",
            ) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing drops the flock
            self.fd = None


def create_run_dir(run_dir: Path, resume: bool, resume_command: str) -> RunDirLock:
    """Create and lock ``run_dir``; re-checked under the lock, since another run may have
    started there since ``check_run_dir``."""
    run_dir.mkdir(parents=True, exist_ok=True)
    lock = RunDirLock(run_dir).acquire()
    try:
        if not resume and any(p.name != LOCK_FILE for p in run_dir.iterdir()):
            check_run_dir(run_dir, resume, resume_command)
    except BaseException:
        lock.release()
        raise
    return lock


def check_resume_config(
    run_dir: Path, current: dict[str, Any], resume_command: str, keys: tuple[str, ...],
    moved: dict[str, str] | None = None,
) -> None:
    """A resumed run must compute what the interrupted one did: refuse changed result keys
    (``keys``: the core's ``RESULT_KEYS`` plus those plugins declared, ``config.result_keys()``)."""
    saved_file = run_dir / CONFIG_JSON
    try:
        saved = json.loads(saved_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise TinkerplugError(f"--resume: cannot read {saved_file}: {exc}") from None
    changed = []
    for key in keys:
        old, new = _get(saved, key), _get(current, key)
        if old is None and key in (moved or {}):  # a run dir from before the key moved into a table
            old = _get(saved, (moved or {})[key])
        if old is None and key in ADDED_KEYS:
            continue
        if old != new:
            changed.append(f"{key}: {json.dumps(old)} -> {json.dumps(new)}")
    if changed:
        raise ConfigError(
            f"--resume: the config differs from the one {run_dir.name} was started with "
            f"({saved_file}):\n  " + "\n  ".join(changed),
            hint="resume with the same settings (put the old values back, or --set them), "
            "or start a new run with --set run_dir=runs/NEW_NAME",
        )


def _get(data: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        data = data.get(part) if isinstance(data, dict) else None
    return data


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temp file + rename: a crash leaves the old file or the new one, never half."""
    tmp = path.with_name(f".{path.name}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (a power cut after it must not bring back the old file)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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
    _write_checkpoints(run_dir, [r.to_json() for r in read_checkpoints(run_dir)] + [record.to_json()])


def _write_checkpoints(run_dir: Path, rows: list[dict[str, Any]]) -> None:
    atomic_write_text(run_dir / CHECKPOINTS_JSONL, "".join(json.dumps(r) + "\n" for r in rows))


def last_checkpoint(run_dir: Path) -> CheckpointRecord | None:
    """The checkpoint ``--resume`` starts from (retention never removes it; skipped if so)."""
    rows = [row for row in read_checkpoints(run_dir) if not row.removed]
    return rows[-1] if rows else None


def pick_checkpoint(checkpoints: list[dict[str, Any]], step: int | None, run_dir: Path) -> dict[str, Any]:
    """The row of checkpoint ``step`` (default: the last) among ``checkpoints.jsonl`` rows;
    rows a retention plugin marked ``removed`` are not offered."""
    kept = [row for row in checkpoints if not row.get("removed")]
    if not kept:
        raise TinkerplugError(
            f"{run_dir} has no checkpoint yet",
            hint="checkpoints are saved every save_every steps and at the end of a run",
        )
    if step is None:
        return kept[-1]
    for record in reversed(kept):
        if record["step"] == step:
            return record
    steps = ", ".join(str(r["step"]) for r in kept)
    removed = " (older ones were removed by [retention])" if len(kept) < len(checkpoints) else ""
    raise TinkerplugError(f"{run_dir} has no checkpoint at step {step}{removed}", hint=f"checkpoint steps: {steps}")


def mark_removed(run_dir: Path, steps: set[int]) -> None:
    """Mark the rows of checkpoints ``steps`` as removed (their files are gone; the rows stay,
    so the run's history is kept)."""
    rows = [r.to_json() for r in read_checkpoints(run_dir)]
    for row in rows:
        if row["step"] in steps:
            row["removed"] = True
    _write_checkpoints(run_dir, rows)
