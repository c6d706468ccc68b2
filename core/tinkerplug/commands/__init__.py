"""Extra ``tinkerplug`` subcommands, one module each. Modules stay light: heavy imports go
inside the command functions. Register a command by adding one line to ``COMMANDS``."""

from __future__ import annotations

import importlib

import click

# "module:attribute" of each click command
COMMANDS: list[str] = [
    "tinkerplug.commands.export:export",
    "tinkerplug.commands.plot:plot",
    "tinkerplug.commands.runs:runs",
    "tinkerplug.commands.runs:show",
    "tinkerplug.commands.local:local",
    "tinkerplug_local.server.command:serve",  # moves to the local plugin's register_commands hook
]


def add_commands(group: click.Group) -> None:
    for spec in COMMANDS:
        module, attr = spec.split(":")
        group.add_command(getattr(importlib.import_module(module), attr))
