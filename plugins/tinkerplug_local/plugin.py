"""Hook implementations of the local backend (``backend = "local"``, the default without a key)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import tinkerplug

if TYPE_CHECKING:
    from tinkerplug_local.settings import LocalSettings


@tinkerplug.hookimpl
def register_config_sections(register: Any) -> None:
    from tinkerplug_local.settings import LocalSettings

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
        checkpoint_dir=Path(run_dir) / "checkpoints",
        device=settings.device,
        dtype=settings.dtype,
        gradient_checkpointing=settings.gradient_checkpointing,
        microbatch_tokens=settings.microbatch_tokens,
    )
