"""The ``[step_decay]`` config table, validated with the rest of the run config."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class StepDecaySettings(BaseModel):
    """The ``[step_decay]`` table of the run config."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    milestones: list[float] = Field(default_factory=lambda: [0.5, 0.75])
    gamma: float = Field(0.1, gt=0, le=1)
    warmup_steps: int = Field(0, ge=0, description="Linear warmup steps before the first milestone.")

    @field_validator("milestones")
    @classmethod
    def _fractions_in_order(cls, value: list[float]) -> list[float]:
        if any(not 0 < m < 1 for m in value) or value != sorted(value):
            raise ValueError("milestones must be increasing fractions of the run, each between 0 and 1")
        return value
