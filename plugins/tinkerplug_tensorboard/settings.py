"""The ``[tensorboard]`` table.

Imported only when a config is loaded: pydantic models are slow to build, and every
command imports the plugin modules at start-up."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class TensorBoardSettings(BaseModel):
    """The ``[tensorboard]`` table."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    log_dir: Path | None = Field(None, description="Default: RUN_DIR/tensorboard; relative paths are under RUN_DIR.")
    flush_secs: int = Field(10, gt=0, description="How often pending events are written to disk.")
