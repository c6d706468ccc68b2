"""The ``[heldout]`` table.

Imported only when a config is loaded: pydantic models are slow to build, and every
command imports the plugin modules at start-up."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class HeldoutSettings(BaseModel):
    """The ``[heldout]`` table."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = True
    limit: int | None = Field(None, gt=0, description="Evaluate only the first N records.")
    max_tokens: int = Field(64, gt=0)
    temperature: float = Field(0.0, ge=0)
