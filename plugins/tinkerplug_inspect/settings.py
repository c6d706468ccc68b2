"""The ``[inspect]`` table.

Imported only when a config is loaded: pydantic models are slow to build, and every command
imports the plugin modules at start-up."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class InspectSettings(BaseModel):
    """The ``[inspect]`` table."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    tasks: list[str] = Field(
        default_factory=list,
        description='Inspect tasks: "path/task.py@name" (relative to the config file) or registry names.',
    )
    task_args: dict[str, Any] = Field(default_factory=dict, description="Arguments passed to every task.")
    limit: int | None = Field(None, gt=0, description="Evaluate only the first N samples of each task.")
    temperature: float = Field(0.0, ge=0)
    max_tokens: int = Field(64, gt=0)
    max_connections: int = Field(
        1024, gt=0, description="Samples in flight at once; the local backend batches them."
    )
