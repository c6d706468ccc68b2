"""TensorBoard logging, off unless ``[tensorboard] enabled = true``.

Every numeric metric of a step becomes a scalar with the metric's name as tag
(``train/loss``, ``eval/heldout/exact_match``: TensorBoard groups by the prefix). On resume the
writer purges events from the checkpoint step on, so replayed steps replace the old ones.
``tensorboardX`` is imported only when a run enables the plugin. The writer belongs to one
run: ``on_run_start`` registers a ``RunWriter`` for it (``run.plugins.register_for_run``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import tinkerplug
from tinkerplug.errors import PluginError

if TYPE_CHECKING:
    from tinkerplug_tensorboard.settings import TensorBoardSettings

DEFAULT_DIR = "tensorboard"

@tinkerplug.hookimpl
def register_config_sections(register: Any) -> None:
    from tinkerplug_tensorboard.settings import TensorBoardSettings

    register("tensorboard", TensorBoardSettings)


def log_dir(run: Any) -> Path:
    settings: TensorBoardSettings = run.config.section("tensorboard")
    return run.run_dir / (settings.log_dir or DEFAULT_DIR)


@tinkerplug.hookimpl
def on_run_start(run: Any) -> None:
    settings: TensorBoardSettings = run.config.section("tensorboard")
    if not settings.enabled:
        return
    try:
        from tensorboardX import SummaryWriter
    except ImportError:
        raise PluginError(
            "[tensorboard] enabled = true, but tensorboardX is not installed",
            hint="pip install 'tinkerplug[tensorboard]'  (or set [tensorboard] enabled = false)",
        ) from None
    writer = SummaryWriter(
        str(log_dir(run)),
        flush_secs=settings.flush_secs,
        # Resuming at step n: hide events at steps >= n from the earlier attempt.
        purge_step=run.start_step if run.start_step > 0 else None,
    )
    if run.start_step == 0:
        writer.add_text("config", "```\n" + json.dumps(run.config.to_json(), indent=2) + "\n```", 0)
    run.plugins.register_for_run(RunWriter(writer), "tensorboard:writer")


class RunWriter:
    """The event writer of one run."""

    def __init__(self, writer: Any):
        self.writer = writer

    @tinkerplug.hookimpl
    def log_metrics(self, step: int, metrics: Mapping[str, Any]) -> None:
        for key, value in metrics.items():
            if key == "step" or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                self.writer.add_scalar(key, value, step)

    @tinkerplug.hookimpl
    def on_run_end(self) -> None:
        self.writer.close()
