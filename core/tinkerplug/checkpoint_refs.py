"""Weights named in a config: ``init_from``, a DPO reference, a distillation teacher.

A reference is a run dir (its last checkpoint), ``RUN_DIR:STEP``, a ``save_state`` path (a
local directory or ``tinker://.../weights/NAME``) or a sampler path
(``.../sampler_weights/NAME``). Run dirs say their base model in ``config.json``, so another
base model is refused before any weights load.

A run dir without a step means its last checkpoint *when the run starts*: what each reference
resolved to is pinned in the run's ``config.json`` (``references``), and a resumed run uses
that, however far the other run has trained since (``resolve_pinned``).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tinkerplug import rundir
from tinkerplug.backend_calls import wait_result
from tinkerplug.errors import ConfigError, TinkerplugError

STATE_PART, SAMPLER_PART = "/weights/", "/sampler_weights/"


@dataclass
class CheckpointRef:
    """Where a reference's weights are; ``base_model`` when a run dir says it."""

    spec: str
    state_path: str | None
    sampler_path: str | None
    base_model: str | None = None


def resolve_checkpoint(spec: str, key: str) -> CheckpointRef:
    """The checkpoint ``spec`` names (``key`` names the config key in errors)."""
    run_dir, step = _split_step(spec)
    if (run_dir / rundir.CHECKPOINTS_JSONL).is_file():
        return _from_run_dir(spec, run_dir, step, key)
    if spec.startswith("tinker://") or Path(spec).expanduser().is_dir():
        path = spec if spec.startswith("tinker://") else str(Path(spec).expanduser().resolve())
        if SAMPLER_PART in path:
            return CheckpointRef(spec, None, path)
        return CheckpointRef(spec, path, path.replace(STATE_PART, SAMPLER_PART) if STATE_PART in path else None)
    raise ConfigError(
        f"{key} = {spec!r}: no such run dir or checkpoint",
        hint="give a run dir (its last checkpoint), RUN_DIR:STEP, a save_state path or a tinker:// path",
    )


REFERENCES = "references"  # in config.json: config key -> the CheckpointRef its spec resolved to
_pending: dict[Path, dict[str, dict[str, Any]]] = {}  # pins made before the run dir exists


def resolve_pinned(config: Any, spec: str, key: str) -> CheckpointRef:
    """``resolve_checkpoint`` for run ``config``, the same on every resume: the first answer is
    pinned (a run dir's "last checkpoint" moves on if that run trains on)."""
    run_dir = Path(config.run_dir).expanduser().resolve()
    pinned = _pins(run_dir).get(key)
    if pinned is not None and pinned.get("spec") == spec:
        return CheckpointRef(**pinned)
    ref = resolve_checkpoint(spec, key)
    _pin(run_dir, key, ref)
    return ref


def pending_pins(run_dir: Path) -> dict[str, dict[str, Any]]:
    """The pins made while the run was prepared, for the ``config.json`` about to be written."""
    return _pending.pop(run_dir.resolve(), {})


def _pins(run_dir: Path) -> dict[str, dict[str, Any]]:
    saved = _read_config(run_dir)
    return {**(saved.get(REFERENCES) or {}), **_pending.get(run_dir, {})}


def _pin(run_dir: Path, key: str, ref: CheckpointRef) -> None:
    config_file = run_dir / rundir.CONFIG_JSON
    if not config_file.is_file():  # prepared, not yet written: open_run_dir writes it with these
        _pending.setdefault(run_dir, {})[key] = asdict(ref)
        return
    saved = _read_config(run_dir)
    saved.setdefault(REFERENCES, {})[key] = asdict(ref)
    rundir.atomic_write_text(config_file, json.dumps(saved, indent=2) + "\n")


def _read_config(run_dir: Path) -> dict[str, Any]:
    try:
        return json.loads((run_dir / rundir.CONFIG_JSON).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}


def _split_step(spec: str) -> tuple[Path, int | None]:
    head, sep, tail = spec.rpartition(":")
    if sep and tail.isdigit() and not spec.startswith("tinker://"):
        return Path(head).expanduser().resolve(), int(tail)
    return Path(spec).expanduser().resolve(), None


def _from_run_dir(spec: str, run_dir: Path, step: int | None, key: str) -> CheckpointRef:
    rows = rundir.read_jsonl(run_dir / rundir.CHECKPOINTS_JSONL)
    try:
        row = rundir.pick_checkpoint(rows, step, run_dir)
    except TinkerplugError as exc:
        raise ConfigError(f"{key} = {spec!r}: {exc.message}", hint=exc.hint) from None
    try:
        base = json.loads((run_dir / rundir.CONFIG_JSON).read_text(encoding="utf-8")).get("base_model")
    except (OSError, json.JSONDecodeError):
        base = None
    return CheckpointRef(spec, row["state_path"], row["sampler_path"], base)


def check_base(ref: CheckpointRef, base_model: str, key: str) -> None:
    """Refuse a run dir trained on another base model (before anything loads)."""
    if ref.base_model is not None and ref.base_model != base_model:
        raise ConfigError(
            f"{key} = {ref.spec!r} was trained on base model {ref.base_model!r}, not {base_model!r}",
            hint=f"set base_model = {ref.base_model!r}, or pick a checkpoint of {base_model!r}",
        )


def check_same_base(client: Any, config: Any, what: str, ref: CheckpointRef) -> None:
    """The loaded weights' base model and LoRA rank are the run's (as the backend reports them)."""
    check_base(ref, config.base_model, "init_from")
    info = wait_result(client.get_info())
    base = getattr(info, "model_name", None) or getattr(getattr(info, "model_data", None), "model_name", None)
    if base and base != config.base_model:
        raise ConfigError(
            f"{what} was trained on base model {base!r}, not {config.base_model!r}",
            hint=f"set base_model = {base!r}, or pick a checkpoint of {config.base_model!r}",
        )
    rank = getattr(info, "lora_rank", None)
    if rank and rank != config.lora_rank:
        raise ConfigError(
            f"{what} has LoRA rank {rank}, the config lora_rank = {config.lora_rank}",
            hint=f"set lora_rank = {rank}: the weights keep the rank they were trained with",
        )


def reference_sampler_path(config: Any) -> str | None:
    """The sampler weights a run starts from (``init_from``), or ``None`` for the base model:
    the reference of DPO and of RL's KL penalty."""
    if not config.init_from:
        return None
    ref = resolve_pinned(config, config.init_from, "init_from")
    if ref.sampler_path is None:
        raise ConfigError(
            f"init_from = {config.init_from!r}: no sampler weights beside that state, for the reference logprobs",
            hint="give the run dir (or RUN_DIR:STEP) instead of the state path",
        )
    return ref.sampler_path


def open_reference_sampler(service: Any, config: Any) -> Any:
    """A sampling client on the weights the run starts from (``init_from``, else the base)."""
    path = reference_sampler_path(config)
    if path is None:
        return wait_result(service.create_sampling_client(base_model=config.base_model))
    return wait_result(service.create_sampling_client(model_path=path))
