"""Hook implementations of the local backend (``backend = "local"``, the default without a key)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

import tinkerplug


class LocalSettings(BaseModel):
    """The ``[local]`` table."""

    model_config = ConfigDict(extra="forbid")

    device: str = "auto"  # auto | cpu | cuda | cuda:N
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"


@tinkerplug.hookimpl
def register_config_sections(register: Any) -> None:
    register("local", LocalSettings)


@tinkerplug.hookimpl
def create_service_client(config: Any, run_dir: str) -> Any:
    if config.resolved_backend != "local":
        return None
    from tinkerplug_local.loading import resolve_model
    from tinkerplug_local.service import ServiceClient

    resolve_model(config.base_model)  # fail fast, before anything loads
    settings: LocalSettings = config.section("local")
    return ServiceClient(
        checkpoint_dir=Path(run_dir) / "checkpoints", device=settings.device, dtype=settings.dtype
    )
