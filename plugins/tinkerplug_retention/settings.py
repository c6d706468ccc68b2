"""The ``[retention]`` table (imported only when a config is loaded)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RetentionSettings(BaseModel):
    """The ``[retention]`` table. Neither key set: every checkpoint is kept."""

    model_config = ConfigDict(extra="forbid")

    keep_last: int | None = Field(None, ge=1, description="Keep the N most recent checkpoints (Hugging Face's save_total_limit).")
    keep_every: int | None = Field(None, ge=1, description="Also keep every checkpoint whose step is a multiple of M.")
