"""The ``[local]`` table.

Imported only when a config is loaded: pydantic models are slow to build, and every
command imports the plugin modules at start-up."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class LocalSettings(BaseModel):
    """The ``[local]`` table."""

    model_config = ConfigDict(extra="forbid")

    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    # Recompute each decoder layer in backward: activation memory per token drops to ~2 hidden
    # vectors per layer, a step takes ~30 % longer. Same results.
    gradient_checkpointing: bool = False
    # Tokens run through the model at once; 0 picks it from the device's total memory.
    microbatch_tokens: int = Field(default=0, ge=0)
