"""What the service keeps about a checkpoint besides its files: its expiry (TTL) and its
``public`` flag, in one JSON file at the checkpoint root (a hidden name: never a run).

Expiry is real: an expired checkpoint is deleted from disk by :meth:`CheckpointMeta.sweep`
(run before every lookup and listing, and by a sweeper thread every ``SWEEP_S`` seconds), and
answers "does not exist" from then on, as on the service.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any

META_FILE = ".tinkerplug_checkpoints.json"
SWEEP_S = 30.0
MAX_TTL_S = 10 * 365 * 24 * 3600  # the service's upper bound (10 years)


class CheckpointMeta:
    """``"run/kind/name" -> {"expires_at": epoch seconds | None, "public": bool}``."""

    def __init__(self, root: Path):
        self.root = root
        self._file = root / META_FILE
        self._lock = threading.RLock()
        self._entries: dict[str, dict[str, Any]] = self._read()
        self._stop = threading.Event()
        threading.Thread(target=self._sweeper, name="tinkerplug-ttl", daemon=True).start()

    def get(self, key: str) -> dict[str, Any]:
        with self._lock:
            return dict(self._entries.get(key, {}))

    def set_ttl(self, key: str, ttl_seconds: int | None) -> float | None:
        """Expire ``key`` ``ttl_seconds`` from now (None: never); the expiry time."""
        if ttl_seconds is not None and not 0 < ttl_seconds <= MAX_TTL_S:
            raise ValueError(f"ttl_seconds must be between 1 and {MAX_TTL_S} (10 years), or null for no expiry")
        expires = time.time() + ttl_seconds if ttl_seconds is not None else None
        self._update(key, expires_at=expires)
        return expires

    def set_public(self, key: str, public: bool) -> None:
        self._update(key, public=public)

    def forget(self, key: str) -> None:
        with self._lock:
            if self._entries.pop(key, None) is not None:
                self._write()

    def sweep(self) -> list[str]:
        """Delete every expired checkpoint; the keys deleted."""
        now = time.time()
        with self._lock:
            expired = [k for k, e in self._entries.items() if e.get("expires_at") is not None and e["expires_at"] <= now]
            for key in expired:
                directory = self.root / key
                if directory.is_dir() and not directory.is_symlink() and directory.resolve().is_relative_to(self.root.resolve()):
                    shutil.rmtree(directory, ignore_errors=True)
                del self._entries[key]
            if expired:
                self._write()
        return expired

    def close(self) -> None:
        self._stop.set()

    def _update(self, key: str, **values: Any) -> None:
        with self._lock:
            self._entries.setdefault(key, {}).update(values)
            self._write()

    def _sweeper(self) -> None:
        while not self._stop.wait(SWEEP_S):
            try:
                self.sweep()
            except OSError:
                pass  # the next sweep tries again

    def _read(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self._file.read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _write(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self._file.with_name(self._file.name + ".tmp")
        tmp.write_text(json.dumps(self._entries, indent=1, sort_keys=True))
        os.replace(tmp, self._file)
