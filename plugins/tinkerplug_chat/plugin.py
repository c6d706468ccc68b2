"""Adds ``tinkerplug chat`` (``register_commands``); the command module imports click only."""

from __future__ import annotations

from typing import Any

import tinkerplug


@tinkerplug.hookimpl
def register_commands(cli: Any) -> None:
    from tinkerplug_chat.command import chat_command

    cli.add_command(chat_command)
