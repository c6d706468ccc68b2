"""Step-decay learning rate for tinkerplug: ``lr = learning_rate * gamma ** k`` after the k-th
milestone, after ``warmup_steps`` of linear warmup. Off unless the config says::

    [step_decay]
    enabled = true
    warmup_steps = 2
    milestones = [0.5, 0.75]   # fractions of the run
    gamma = 0.1

It overrides the first-party ``schedule`` plugin through ``lr_for_step``, a firstresult hook:
installed plugins are called before first-party ones, and returning ``None`` (when disabled)
hands the question on to the next plugin.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import tinkerplug
from tinkerplug.errors import ConfigError

if TYPE_CHECKING:
    from tinkerplug_step_decay.settings import StepDecaySettings


def step_decay(step: int, num_steps: int, base: float, warmup: int, milestones: list[float], gamma: float) -> float:
    """The learning rate of step ``step`` (0-based) of ``num_steps``."""
    if step < warmup:
        return base * (step + 1) / warmup
    passed = sum(step >= round(m * num_steps) for m in milestones)
    return base * gamma**passed


@tinkerplug.hookimpl
def register_config_sections(register: Any) -> None:
    # Imported here, not at the top: every tinkerplug command imports plugin modules at
    # start-up, and building a pydantic model costs more than the rest of the plugin.
    from tinkerplug_step_decay.settings import StepDecaySettings

    register("step_decay", StepDecaySettings)


@tinkerplug.hookimpl
def lr_for_step(step: int, num_steps: int, config: Any) -> float | None:
    settings: StepDecaySettings = config.section("step_decay")
    if not settings.enabled:
        return None  # let the next plugin (the first-party schedule) answer
    if config.use_recommended_lr:
        raise ConfigError(
            "[step_decay] uses learning_rate as its base; use_recommended_lr is not supported",
            hint="set use_recommended_lr = false and learning_rate",
        )
    warmup = min(settings.warmup_steps, num_steps)
    return step_decay(step, num_steps, config.learning_rate, warmup, settings.milestones, settings.gamma)
