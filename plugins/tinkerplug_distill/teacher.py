"""The teacher: a sampling client on a base model, a run's checkpoint or a checkpoint path,
refused when it was trained on another base model whose tokenizer differs from the student's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tinkerplug.backend_calls import wait_result
from tinkerplug.checkpoint_refs import resolve_pinned
from tinkerplug.errors import ConfigError

KEY = "[distill] teacher"


def open_teacher(spec: str, run: Any) -> Any:
    """A sampling client of ``spec`` that shares the student's tokenizer."""
    ref = None if is_model_dir(spec) else try_checkpoint(spec, run.config)
    if ref is not None and ref.sampler_path is None:
        raise ConfigError(f"{KEY} = {spec!r}: no sampler weights there", hint="give the run dir, RUN_DIR:STEP or a sampler_weights path")
    base = spec if ref is None else ref.base_model
    try:
        if ref is None:
            teacher = wait_result(run.service_client.create_sampling_client(base_model=spec))
        else:
            teacher = wait_result(run.service_client.create_sampling_client(model_path=ref.sampler_path))
    except Exception as exc:  # noqa: BLE001 - the backend's reason, in one message
        raise ConfigError(
            f"{KEY} = {spec!r}: not a run dir, checkpoint or base model the backend can open ({type(exc).__name__}: {exc})",
            hint="give a base model name, a run dir (RUN_DIR[:STEP]) or a sampler checkpoint path",
        ) from None
    if base is None or base != run.config.base_model:
        check_tokenizer(teacher, run.tokenizer, spec)
    return teacher


def is_model_dir(spec: str) -> bool:
    """An HF model directory (weights and ``config.json``), not a run dir or a checkpoint."""
    path = Path(spec).expanduser()
    return (path / "config.json").is_file() and not (path / "checkpoints.jsonl").is_file()


def try_checkpoint(spec: str, config: Any) -> Any:
    try:
        return resolve_pinned(config, spec, KEY)
    except ConfigError:
        run_dir = spec.rpartition(":")[0] if ":" in spec and not spec.startswith("tinker://") else spec
        if Path(run_dir).expanduser().exists():  # a run dir with no such step: its own message
            raise
        return None  # not a path: a base model name


def check_tokenizer(teacher: Any, student_tokenizer: Any, spec: str) -> None:
    """Teacher logprobs are per token: the two models must split text into the same tokens."""
    try:
        theirs = teacher.get_tokenizer().get_vocab()
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"{KEY} = {spec!r}: cannot read the teacher's tokenizer to compare it ({type(exc).__name__}: {exc})") from None
    if theirs != student_tokenizer.get_vocab():
        raise ConfigError(
            f"{KEY} = {spec!r} has another tokenizer than the student ({len(theirs)} vs "
            f"{len(student_tokenizer.get_vocab())} tokens): its logprobs cannot be compared token by token",
            hint="pick a teacher of the same model family (the same tokenizer) as base_model",
        )
