"""A saved checkpoint of a run dir, opened for use without training (``tinkerplug eval``,
``tinkerplug chat``): the run's config and plugins, its backend, a sampling client on the
checkpoint's sampler weights, the tokenizer and renderer; a training client on its state only
when something asks for one (``forward`` for loss-based evaluators).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinkerplug.errors import BackendError, TinkerplugError

if TYPE_CHECKING:
    from tinkerplug.config import RunConfig
    from tinkerplug.hook_types import CheckpointRecord
    from tinkerplug.plugins import Plugins


def checkpoint_at(run_dir: Path, step: int | None) -> CheckpointRecord:
    """Checkpoint ``step`` (default: the last) of ``run_dir``; an error listing the steps
    there are when it has none at ``step``, or that says what a run dir is."""
    from tinkerplug.run_info import read_run
    from tinkerplug.hook_types import CheckpointRecord
    from tinkerplug.rundir import pick_checkpoint

    info = read_run(run_dir)  # "not a run directory" before anything else
    try:
        row = pick_checkpoint(info.checkpoints, step, run_dir)
    except TinkerplugError as exc:
        if step is not None and info.checkpoints:
            exc.hint = f"{exc.hint} (--step N)"
        else:
            exc.message += ": nothing to load"
        raise
    known = set(CheckpointRecord.__dataclass_fields__)
    return CheckpointRecord(**{k: v for k, v in row.items() if k in known})


@dataclass
class SavedCheckpoint:
    config: RunConfig
    plugins: Plugins
    run_dir: Path
    record: CheckpointRecord
    service: Any
    sampling_client: Any
    tokenizer: Any
    renderer: Any
    _training_client: Any = field(default=None, repr=False)

    @property
    def training_client(self) -> Any:
        """A training client on the checkpoint's state (created on first use: on Tinker it is
        a new training session)."""
        if self._training_client is None:
            self._training_client = wait_backend(
                self.service.create_training_client_from_state(self.record.state_path),
                f"could not load the step-{self.record.step} state {self.record.state_path}",
            )
        return self._training_client

    def close(self, status: str = "success") -> None:
        """Finish the backend session: the SDK's ``close(status)`` ends a Tinker session and its
        heartbeats; the local backend's stops its worker threads. As at the end of a run, a
        backend that does not answer within 10 s is left to time the session out."""
        close = getattr(self.service, "close", None)
        if callable(close):
            wait_backend(close(status), "could not close the backend session", timeout=10)

    def base_sampling_client(self) -> Any:
        """A sampling client on the base model, for comparisons."""
        return wait_backend(
            self.service.create_sampling_client(base_model=self.config.base_model),
            f"could not open base model {self.config.base_model!r}",
        )


def open_checkpoint(
    run_dir: Path, step: int | None, overrides: tuple[str, ...] = (), plugin_options: tuple[str, ...] = ()
) -> SavedCheckpoint:
    from tinkerplug.assemble import load_saved_run

    run_dir = Path(run_dir).resolve()
    record = checkpoint_at(run_dir, step)  # before the plugins: a bad RUN_DIR or --step fails fast
    config, plugins = load_saved_run(run_dir, overrides, plugin_options)
    service = plugins.create_service_client(config, str(run_dir))
    sampling_client = wait_backend(
        service.create_sampling_client(model_path=record.sampler_path),
        f"could not open the step-{record.step} sampler weights {record.sampler_path}",
    )
    tokenizer = run_tokenizer(config, sampling_client)
    renderer = plugins.resolve_renderer(config, tokenizer)
    return SavedCheckpoint(config, plugins, run_dir, record, service, sampling_client, tokenizer, renderer)


def run_tokenizer(config: RunConfig, sampling_client: Any) -> Any:
    """The tokenizer the run trained with: a shipped model's or a local model dir's own files
    when ``base_model`` is one, else the backend's (the SDK's ``get_tokenizer`` looks the model
    name up on the Hugging Face hub, where a shipped name like ``tiny-chat`` does not exist)."""
    from tinkerplug.models import shipped_model_dir

    local = shipped_model_dir(config.base_model)
    if local is None and Path(config.base_model).expanduser().is_dir():
        local = Path(config.base_model).expanduser()
    if local is None:
        return sampling_client.get_tokenizer()
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(local))


def wait_backend(future: Any, what: str, timeout: float | None = None) -> Any:
    """Block on an SDK future (or take a plain value); backend failures as one ``BackendError``."""
    from tinkerplug.backend_calls import wait_result

    try:
        return wait_result(future, timeout)
    except TinkerplugError:
        raise
    except Exception as exc:  # noqa: BLE001 - the backend's own error types
        raise BackendError(f"{what}: {type(exc).__name__}: {exc}") from exc
