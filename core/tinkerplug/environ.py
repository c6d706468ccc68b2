"""Process settings that must be in place before torch loads, in one place."""

from __future__ import annotations

from typing import MutableMapping


def quiet_openmp(env: MutableMapping[str, str]) -> None:
    """Idle OpenMP threads sleep instead of spinning: spinning threads collapse throughput on
    shared cores (a training step and a sampling request contend for the same few). Set
    before torch is imported, in this process or (``env`` of a child) in one it starts; a
    value the user set wins."""
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
