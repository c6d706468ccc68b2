"""The ``[schedule]`` table.

Imported only when a config is loaded: pydantic models are slow to build, and every
command imports the plugin modules at start-up."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# Keys older configs wrote at the top level: still read there, with a deprecation note.
TOP_LEVEL_KEYS = {"lr_schedule": "lr_schedule", "warmup_steps": "warmup_steps", "warmup_ratio": "warmup_ratio", "min_lr": "min_lr"}


class ScheduleSettings(BaseModel):
    """The ``[schedule]`` table: warmup, then the decay to ``min_lr`` (``learning_rate`` and
    ``use_recommended_lr`` stay top-level keys: they set the base the schedule scales)."""

    model_config = ConfigDict(extra="forbid")

    lr_schedule: Literal["cosine", "linear", "constant"] = Field("cosine", description="The decay after warmup.")
    warmup_steps: int | None = Field(None, ge=0, description="Linear warmup steps (wins over warmup_ratio).")
    warmup_ratio: float = Field(0.0, ge=0, lt=1, description="Warmup steps = ceil(warmup_ratio x steps).")
    min_lr: float = Field(0.0, ge=0, description="The floor the decay heads for.")
