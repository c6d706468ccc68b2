"""A saved checkpoint of a run dir, opened for use without training (``tinkerplug eval``,
``tinkerplug chat``): the run's config and plugins, its backend, a sampling client on the
checkpoint's sampler weights, the tokenizer and renderer; a training client on its state only
when something asks for one (``forward`` for loss-based evaluators).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinkerplug.errors import BackendError, TinkerplugError

if TYPE_CHECKING:
    from tinkerplug.config import RunConfig
    from tinkerplug.context import CheckpointRecord
    from tinkerplug.plugins import Plugins


def pick_checkpoint(run_dir: Path, step: int | None) -> CheckpointRecord:
    """The checkpoint at ``step`` (default: the last one) of ``run_dir``; an error that lists
    the steps there are when it has none at ``step``."""
    from tinkerplug.commands.runs import read_run
    from tinkerplug.context import CheckpointRecord

    info = read_run(run_dir)
    rows = [r for r in info.checkpoints if not r.get("removed")]
    if not rows:
        raise TinkerplugError(
            f"{run_dir} has no checkpoint yet: nothing to load",
            hint="checkpoints are saved every save_every steps and at the end of a run (`tinkerplug run` it first)",
        )
    chosen = rows[-1] if step is None else next((r for r in reversed(rows) if r["step"] == step), None)
    if chosen is None:
        steps = ", ".join(str(r["step"]) for r in rows)
        raise TinkerplugError(f"{run_dir} has no checkpoint at step {step}", hint=f"checkpoint steps: {steps} (--step N)")
    known = {f for f in CheckpointRecord.__dataclass_fields__}
    return CheckpointRecord(**{k: v for k, v in chosen.items() if k in known})


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
            self._training_client = _wait(
                self.service.create_training_client_from_state(self.record.state_path),
                f"could not load the step-{self.record.step} state {self.record.state_path}",
            )
        return self._training_client

    def base_sampling_client(self) -> Any:
        """A sampling client on the base model, for comparisons."""
        return _wait(
            self.service.create_sampling_client(base_model=self.config.base_model),
            f"could not open base model {self.config.base_model!r}",
        )


def open_checkpoint(
    run_dir: Path, step: int | None, overrides: tuple[str, ...] = (), plugin_options: tuple[str, ...] = ()
) -> SavedCheckpoint:
    from tinkerplug.loading import load_saved_run

    run_dir = Path(run_dir).resolve()
    record = pick_checkpoint(run_dir, step)  # before the plugins: a bad RUN_DIR or --step fails fast
    config, plugins = load_saved_run(run_dir, overrides, plugin_options)
    service = plugins.create_service_client(config, str(run_dir))
    sampling_client = _wait(
        service.create_sampling_client(model_path=record.sampler_path),
        f"could not open the step-{record.step} sampler weights {record.sampler_path}",
    )
    tokenizer = sampling_client.get_tokenizer()
    renderer = plugins.resolve_renderer(config, tokenizer)
    return SavedCheckpoint(config, plugins, run_dir, record, service, sampling_client, tokenizer, renderer)


def _wait(future: Any, what: str) -> Any:
    """An SDK future's result (or a plain value); backend failures as one ``BackendError``."""
    try:
        if hasattr(future, "result"):
            return future.result()
        if inspect.isawaitable(future):
            raise TypeError("expected an SDK future, got a coroutine")
        return future
    except TinkerplugError:
        raise
    except Exception as exc:  # noqa: BLE001 - the backend's own error types
        raise BackendError(f"{what}: {type(exc).__name__}: {exc}") from exc
