"""The ``[executor]`` table.

Imported only when a config is loaded: pydantic models are slow to build, and every
command imports the plugin modules at start-up."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

# Keys older configs wrote at the top level (``executor = "sync"``, ``submit_ahead = 2``):
# still read there, with a deprecation note.
TOP_LEVEL_KEYS = {"executor": "name", "submit_ahead": "submit_ahead"}


class ExecutorSettings(BaseModel):
    """The ``[executor]`` table: how training steps are submitted."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("pipelined", description="pipelined (default) or sync, or a plugin's executor.")
    submit_ahead: int = Field(2, ge=0, le=64, description="pipelined: steps kept in flight beyond the current one.")
