"""The ``[nll]`` table.

Imported only when a config is loaded: pydantic models are slow to build, and every
command imports the plugin modules at start-up."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class NllSettings(BaseModel):
    """The ``[nll]`` table."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(True, description="On whenever there is held-out data.")
    data: str | None = Field(None, description="Held-out source (file, dir or hf:NAME); default: data.heldout.")
    format: str | None = Field(None, description="Record format of `data`; default: detected.")
    split: str | None = Field(None, description="Split of an hf: source.")
    limit: int | None = Field(None, gt=0, description="Evaluate only the first N records.")
    batch_size: int = Field(8, gt=0, description="Records per forward request.")
