"""The ``[local]`` table.

Imported only when a config is loaded: pydantic models are slow to build, and every
command imports the plugin modules at start-up."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict


class LocalSettings(BaseModel):
    """The ``[local]`` table."""

    model_config = ConfigDict(extra="forbid")

    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
