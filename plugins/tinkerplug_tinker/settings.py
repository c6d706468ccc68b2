"""The ``[tinker]`` table.

Imported only when a config is loaded: pydantic models are slow to build, and every
command imports the plugin modules at start-up."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TinkerSettings(BaseModel):
    """The ``[tinker]`` table."""

    model_config = ConfigDict(extra="forbid")

    base_url: str | None = Field(None, description="Tinker API URL; default: TINKER_BASE_URL, else the SDK's.")
    connect_timeout: float = Field(
        10.0, gt=0, le=600, description="Seconds for each request of the start-up check (no retries)."
    )
    check_connection: bool = Field(
        True, description="Check URL, key and base model once before training (seconds, not the SDK's 5-minute retries)."
    )
    export_ttl_seconds: int = Field(
        3600, ge=3600, description="Lifetime of the temporary external-weights copy made by `tinkerplug export`."
    )
