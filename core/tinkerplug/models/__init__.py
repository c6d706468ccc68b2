"""Models shipped with tinkerplug, addressable by a short name in ``base_model``.

Each is a Hugging Face model dir plus ``tinkerplug.json`` (the renderer it was trained with).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

SHIPPED_DIR = Path(__file__).parent


def shipped_models() -> dict[str, Path]:
    """Short name -> model directory, for every shipped model that has weights."""
    return {
        p.name: p
        for p in sorted(SHIPPED_DIR.iterdir())
        if p.is_dir() and (p / "config.json").is_file()
    }


def shipped_model_dir(name: str) -> Path | None:
    """The directory of shipped model ``name`` (e.g. ``tiny-chat``), or None."""
    return shipped_models().get(name)


def model_metadata(name: str) -> dict[str, Any]:
    """``tinkerplug.json`` of a shipped model or local model dir ({} when there is none)."""
    directory = shipped_model_dir(name) or Path(name).expanduser()
    meta = directory / "tinkerplug.json"
    return json.loads(meta.read_text()) if meta.is_file() else {}


def local_model_config(name: str) -> dict[str, Any] | None:
    """``config.json`` of a shipped model or local model dir, or None for a hub id."""
    directory = shipped_model_dir(name) or Path(name).expanduser()
    config = directory / "config.json"
    return json.loads(config.read_text()) if config.is_file() else None
