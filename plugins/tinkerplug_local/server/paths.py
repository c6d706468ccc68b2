"""``tinker://<run>/<kind>/<name>`` paths, resolved inside the server's checkpoint dir only.

The local backend writes checkpoints to ``<root>/<run>/<kind>/<name>``; the server hands them
out as ``tinker://<run>/<kind>/<name>``. A path from a request is checked segment by segment
(no ``..``, no absolute path, no separators, no hidden names) and, resolved with every symlink
followed, must still be inside the root: nothing a client sends reaches outside it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable

SCHEME = "tinker://"
KINDS = {"weights": "training", "sampler_weights": "sampler", "external_weights": "external"}
_SEGMENT = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:=+-]{0,199}$")


class PathError(ValueError):
    """A path that names nothing this server may serve."""


def check_segment(value: str, what: str) -> str:
    if not _SEGMENT.match(value) or ".." in value:
        raise PathError(f"invalid {what} {value!r}: letters, digits and _ . : = + - only")
    return value


class CheckpointPaths:
    def __init__(self, root: Path):
        self.root = root.resolve()
        self.before_lookup: Callable[[], Any] = lambda: None  # the server sweeps expired checkpoints here

    def parse(self, tinker_path: str) -> tuple[str, str, str]:
        """(run, kind, name) of a ``tinker://`` path, each segment checked."""
        if not isinstance(tinker_path, str) or not tinker_path.startswith(SCHEME):
            raise PathError(f"{tinker_path!r} is not a tinker:// path (tinker://<run>/weights/<name>)")
        parts = tinker_path[len(SCHEME):].split("/")
        if len(parts) != 3 or parts[1] not in KINDS:
            raise PathError(f"{tinker_path!r} is not tinker://<run>/{{weights,sampler_weights}}/<name>")
        run, kind, name = parts
        return check_segment(run, "run id"), kind, check_segment(name, "checkpoint name")

    def local(self, run: str, kind: str, name: str, must_exist: bool = True) -> Path:
        if kind not in KINDS:
            raise PathError(f"invalid checkpoint kind {kind!r}")
        self.before_lookup()
        candidate = self.root / check_segment(run, "run id") / kind / check_segment(name, "checkpoint name")
        resolved = candidate.resolve()
        if not resolved.is_relative_to(self.root) or resolved != candidate:
            raise PathError(f"tinker://{run}/{kind}/{name} leads outside the checkpoint dir")
        if must_exist and not resolved.is_dir():
            raise FileNotFoundError(f"checkpoint tinker://{run}/{kind}/{name} does not exist")
        return resolved

    def to_local(self, tinker_path: str, must_exist: bool = True) -> Path:
        return self.local(*self.parse(tinker_path), must_exist=must_exist)

    def to_tinker(self, local_path: str | Path) -> str:
        """The ``tinker://`` path of a checkpoint dir the local backend wrote under the root."""
        relative = Path(local_path).resolve().relative_to(self.root)
        if len(relative.parts) != 3 or relative.parts[1] not in KINDS:
            raise PathError(f"{local_path} is not a checkpoint dir under {self.root}")
        return SCHEME + "/".join(relative.parts)

    def run_dir(self, run: str) -> Path:
        directory = self.root / check_segment(run, "run id")
        if directory.resolve() != directory:
            raise PathError(f"run {run!r} leads outside the checkpoint dir")
        return directory
