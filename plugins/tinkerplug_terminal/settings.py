"""The ``[terminal]`` table (imported only when a config is loaded)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TerminalSettings(BaseModel):
    """The ``[terminal]`` table."""

    model_config = ConfigDict(extra="forbid")

    quiet: bool = Field(False, description="Only warnings and the summary: no progress bar, notes or eval lines (`run -q`).")
