"""Adds ``tinkerplug eval`` (``register_commands``); the command module imports click only."""

from __future__ import annotations

from typing import Any

import tinkerplug


@tinkerplug.hookimpl
def register_commands(cli: Any) -> None:
    from tinkerplug_eval.command import eval_command

    cli.add_command(eval_command)
