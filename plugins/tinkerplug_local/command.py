"""``tinkerplug local -- python my_script.py``: run an unmodified Tinker script on this machine."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from tinkerplug.environ import quiet_openmp
from tinkerplug.errors import TinkerplugError


@click.command(
    "local",
    context_settings={"ignore_unknown_options": True, "allow_interspersed_args": False},
)
@click.option(
    "--checkpoint-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Where save_state / save_weights_for_sampler write (default: $TINKERPLUG_LOCAL_DIR or ~/.cache/tinkerplug/local).",
)
@click.option("--device", default=None, help="torch device for the local backend: auto (default), cpu, cuda, cuda:1, ...")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def local(command: tuple[str, ...], checkpoint_dir: str | None, device: str | None) -> None:
    """Run COMMAND with tinker.ServiceClient served by the local backend.

    \b
    tinkerplug local -- python my_script.py --my-flag 1

    Every Python process COMMAND starts gets tinker.ServiceClient replaced by
    tinkerplug_local.ServiceClient when it imports tinker (no API key, no network), and the
    shipped models (tiny-chat) registered with the cookbook's tokenizer and model tables.
    """
    hook_dir = Path(__file__).parent / "sitecustomize_dir"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(hook_dir), env.get("PYTHONPATH")) if p)
    env["TINKERPLUG_BACKEND"] = "local"
    quiet_openmp(env)  # before torch loads in the child
    if checkpoint_dir is not None:
        env["TINKERPLUG_LOCAL_DIR"] = str(Path(checkpoint_dir).expanduser().resolve())
    if device is not None:
        env["TINKERPLUG_LOCAL_DEVICE"] = device
    sys.stdout.flush()
    sys.stderr.flush()
    if os.name != "posix":
        import subprocess

        try:
            sys.exit(subprocess.call(list(command), env=env))
        except FileNotFoundError as exc:
            raise TinkerplugError(f"command not found: {command[0]}") from exc
    # exec: the script takes over this process (its pid, signals and exit status), so the
    # hook can tell the script's own Python from others it may start.
    env["TINKERPLUG_LOCAL_PID"] = str(os.getpid())
    try:
        os.execvpe(command[0], list(command), env)
    except FileNotFoundError as exc:
        raise TinkerplugError(f"command not found: {command[0]}", hint="tinkerplug local -- python my_script.py") from exc
