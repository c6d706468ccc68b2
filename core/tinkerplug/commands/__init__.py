"""The first-party ``commands`` plugin: the subcommands that read a run dir (``runs``,
``show``, ``plot``, ``export``), one module each, added through ``register_commands`` like a
third-party plugin's. Modules stay light: heavy imports go inside the command functions.
Add a command with one line in ``COMMANDS``."""

from __future__ import annotations

import importlib
from typing import Any

import tinkerplug

# "module:attribute" of each click command
COMMANDS: list[str] = [
    "tinkerplug.commands.export:export",
    "tinkerplug.commands.plot:plot",
    "tinkerplug.commands.runs:runs",
    "tinkerplug.commands.runs:show",
]


def add_commands(cli: Any, specs: list[str]) -> None:
    """``cli.add_command`` for each ``"module:attribute"`` in ``specs``."""
    for spec in specs:
        module, attr = spec.split(":")
        cli.add_command(getattr(importlib.import_module(module), attr))


@tinkerplug.hookimpl
def register_commands(cli: Any) -> None:
    add_commands(cli, COMMANDS)
