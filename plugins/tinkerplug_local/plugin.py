"""Hook implementations of the local backend (``backend = "local"``, the default without a key)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import tinkerplug
from tinkerplug.commands import add_commands

if TYPE_CHECKING:
    from tinkerplug_local.settings import LocalSettings


@tinkerplug.hookimpl
def register_config_sections(register: Any) -> None:
    from tinkerplug_local.settings import LocalSettings

    # dtype changes the numbers a run computes; device only where they are computed.
    register("local", LocalSettings, result_keys=("dtype",))


@tinkerplug.hookimpl
def register_backends(register: Any) -> None:
    register("local", "in-process torch + transformers + peft (no key, no network)")


# The local backend's commands, "module:attribute" of each click command (modules stay light).
COMMANDS = ["tinkerplug_local.command:local"]


@tinkerplug.hookimpl
def register_commands(cli: Any) -> None:
    add_commands(cli, COMMANDS)


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
