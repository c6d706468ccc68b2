"""``tinkerplug serve``: the click command. Imports nothing heavy until it runs."""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path
from typing import Any

import click

from tinkerplug.errors import TinkerplugError

KEYS_ENV = "TINKERPLUG_SERVE_KEYS"
DEFAULT_DIR = Path("~/.cache/tinkerplug/serve")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_bind(host: str, keys: Any) -> None:
    if not is_loopback(host) and not keys:
        raise TinkerplugError(
            f"refusing to serve on {host}, which is not a loopback address, without an API key: "
            "anyone who can reach it could train and read your checkpoints",
            hint=f"set --api-key tml-... (or ${KEYS_ENV}); clients send it as TINKER_API_KEY",
        )


def _keyring(api_key: tuple[str, ...], keys_file: str | None, limits: Any) -> Any:
    from tinkerplug_local.server.principals import load_keyring

    return load_keyring(api_key, os.environ.get(KEYS_ENV, ""), keys_file, limits, KEYS_ENV)


def _banner(host: str, port: int, tls: bool, state: Any, keys: Any, clock_ms: float) -> None:
    shown = f"[{host}]" if ":" in host else host
    print(
        f"tinkerplug serve: {'https' if tls else 'http'}://{shown}:{port} on {state.service.device}; checkpoints in {state.paths.root}; "
        f"{'API key required (' + str(len(keys)) + ' accepted)' if keys else 'no API key required (loopback only)'}"
        + (f"; clock {clock_ms:g} ms" if clock_ms else ""),
        file=sys.stderr, flush=True,
    )


def _compute_threads(keys: Any) -> int:
    """``--compute-threads 0``: the device's choice (0) for a team; 1 for a single key, whose
    requests run in order anyway (side by side needs two keys), so torch keeps all its threads."""
    return 0 if len(keys) > 1 else 1


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind; a non-loopback one needs --api-key.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option("--checkpoint-dir", type=click.Path(file_okay=False), default=None,
              help=f"Where checkpoints are written and tinker:// paths resolve (default {DEFAULT_DIR}).")
@click.option("--device", default=None, help="torch device: auto (default), cpu, cuda, cuda:1, ...")
@click.option("--dtype", type=click.Choice(["auto", "float32", "bfloat16", "float16"]), default="auto", show_default=True)
@click.option("--api-key", "api_key", multiple=True, metavar="KEY",
              help=f"Accept only clients sending this key (repeatable; NAME=KEY names it; also ${KEYS_ENV}).")
@click.option("--keys-file", type=click.Path(dir_okay=False), default=None,
              help="TOML keys file: one [name] table per person with key = \"tml-...\", optional admin = true and limits.")
@click.option("--base-model", "base_models", multiple=True, metavar="NAME",
              help="Serve only this base model (repeatable): a shipped name, hub id or model dir. Without it, keys may "
                   "name any shipped model or hub id, and, on a server without API keys, any model dir.")
@click.option("--max-sessions-per-key", type=click.IntRange(min=0), default=0, show_default=True, help="Open sessions per key (0: no limit); beyond it HTTP 429.")
@click.option("--max-models-per-key", type=click.IntRange(min=0), default=0, show_default=True, help="Training models per key (0: no limit); beyond it HTTP 429.")
@click.option("--max-queued-per-key", type=click.IntRange(min=0), default=0, show_default=True,
              help="Unfinished requests per key (0: no limit); beyond it HTTP 429 with Retry-After, which the SDK retries.")
@click.option("--max-adapters", type=click.IntRange(min=0), default=0, show_default=True,
              help="Training adapters kept in memory per base model (0: all); idle ones wait on disk with their optimizer state.")
@click.option("--mixed-batches/--no-mixed-batches", default=True, show_default=True,
              help="Run requests of different keys queued together as one batch, each row with its own LoRA.")
@click.option("--compute-threads", type=click.IntRange(min=0), default=0, show_default=True,
              help="With mixed batches: threads that run different keys' batches side by side, sharing "
                   "torch's threads (0: 2 on a CPU with two cores or more when two keys or more are "
                   "accepted, else 1; always 1 with --max-adapters or --gradient-checkpointing).")
@click.option("--shutdown-timeout", type=click.FloatRange(min=0), default=30.0, show_default=True,
              help="On SIGTERM: seconds queued requests may take to finish before they are failed with a clear status.")
@click.option("--ssl-certfile", type=click.Path(dir_okay=False, exists=True), default=None, help="Serve HTTPS with this certificate (PEM).")
@click.option("--ssl-keyfile", type=click.Path(dir_okay=False, exists=True), default=None, help="The certificate's private key (PEM).")
@click.option("--clock-ms", type=click.FloatRange(min=0), default=0.0, show_default=True,
              help="Release training results at clock-cycle boundaries of this length, as the service does (0: at once).")
@click.option("--max-body-mb", type=click.FloatRange(min=0.001), default=512.0, show_default=True,
              help="Larger request bodies are refused with HTTP 413.")
@click.option("--gradient-checkpointing", is_flag=True, help="Recompute activations in backward: less memory, same results.")
@click.option("--microbatch-tokens", type=click.IntRange(min=0), default=0, show_default=True,
              help="Tokens run through the model at once; 0 picks it from the device's memory.")
def serve(host: str, port: int, checkpoint_dir: str | None, device: str | None, dtype: str,
          api_key: tuple[str, ...], keys_file: str | None, base_models: tuple[str, ...], max_sessions_per_key: int, max_models_per_key: int,
          max_queued_per_key: int, max_adapters: int, mixed_batches: bool, compute_threads: int, shutdown_timeout: float, ssl_certfile: str | None, ssl_keyfile: str | None, clock_ms: float,
          max_body_mb: float, gradient_checkpointing: bool, microbatch_tokens: int) -> None:
    """Serve the local backend over the Tinker HTTP API, for the unmodified tinker SDK.

    \b
    tinkerplug serve --port 8000 &
    TINKER_BASE_URL=http://127.0.0.1:8000 TINKER_API_KEY=tml-anything python my_tinker_script.py

    Binds to 127.0.0.1 unless --host says otherwise; any other address needs --api-key.
    Checkpoints are tinker://<run>/weights/<name> paths inside --checkpoint-dir; they load
    again after a restart.
    """
    from tinkerplug_local.server.principals import Limits

    keys = _keyring(api_key, keys_file, Limits(max_sessions_per_key, max_models_per_key, max_queued_per_key))
    check_bind(host, keys)
    if bool(ssl_certfile) != bool(ssl_keyfile):
        raise TinkerplugError("--ssl-certfile and --ssl-keyfile go together", hint="give both (PEM files), or neither for plain HTTP")
    root = Path(checkpoint_dir).expanduser() if checkpoint_dir else DEFAULT_DIR.expanduser()
    import uvicorn

    from tinkerplug_local.server.app import create_app
    from tinkerplug_local.server.shutdown import draining_server
    from tinkerplug_local.server.state import ServerState

    state = ServerState(
        root, device=device, dtype=dtype, clock_ms=clock_ms, base_models=base_models, disk_models=not keys,
        gradient_checkpointing=gradient_checkpointing, microbatch_tokens=microbatch_tokens, max_adapters=max_adapters,
        mixed_batches=mixed_batches, compute_threads=compute_threads or _compute_threads(keys),
    )
    app = create_app(state, keys, max_body=int(max_body_mb * 1024 * 1024))
    _banner(host, port, bool(ssl_certfile), state, keys, clock_ms)
    try:
        config = uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False, timeout_graceful_shutdown=5,
                                ssl_certfile=ssl_certfile, ssl_keyfile=ssl_keyfile)
        draining_server(config, state, shutdown_timeout).run()
    finally:
        state.close()
