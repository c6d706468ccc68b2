"""The learning rate per step (``lr_for_step``): a base LR, linear warmup, then decay.

Base LR ``B``: ``learning_rate``, or with ``use_recommended_lr = true`` Tinker's LoRA formula
``5e-5 * 10 * (2000 / hidden_size) ** P`` (P = 0.0775 for Qwen, 0.781 for Llama). Hub names
go to the cookbook's ``hyperparam_utils.get_lr`` (its table of the lineup's hidden sizes needs
no network); shipped models and local model dirs use their ``config.json``.

Its settings are the ``[schedule]`` table (``lr_schedule``, ``warmup_steps``, ``warmup_ratio``,
``min_lr``; older configs wrote them at the top level, still read with a deprecation note).
With ``N`` steps, ``W`` warmup steps (``warmup_steps``, or ``ceil(warmup_ratio * N)``),
floor ``M = min_lr`` and ``p = (step - W) / (N - W)``::

    step < W:   B * (step + 1) / W          (B at step W - 1)
    cosine:     M + (B - M) * (1 + cos(pi * p)) / 2
    linear:     M + (B - M) * (1 - p)
    constant:   B

The decay starts at ``B`` on step ``W`` and would reach ``M`` at step ``N``, one past the
last update, as in the cookbook's and Hugging Face's schedules.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import tinkerplug
from tinkerplug.errors import ConfigError
from tinkerplug.models import local_model_config

if TYPE_CHECKING:
    from tinkerplug_schedule.settings import ScheduleSettings

# The exponents of tinker_cookbook.hyperparam_utils.get_lr, for models it does not know.
FAMILY_EXPONENT = {"llama": 0.781, "qwen": 0.0775}
LORA_BASE_LR = 5e-5 * 10  # full fine-tuning base LR x the LoRA multiplier
NO_FORMULA_HINT = "set learning_rate and use_recommended_lr = false"


def formula_lr(hidden_size: int, family: str) -> float:
    """Tinker's recommended LoRA learning rate for a model of ``family`` and ``hidden_size``."""
    return LORA_BASE_LR * (2000 / hidden_size) ** FAMILY_EXPONENT[family]


def recommended_lr(base_model: str) -> float:
    """Tinker's recommended LoRA LR for ``base_model``; ``ConfigError`` when there is none."""
    config = local_model_config(base_model)
    if config is None:
        return _cookbook_lr(base_model)
    model_type = str(config.get("model_type", ""))
    family = next((f for f in FAMILY_EXPONENT if f in model_type.lower()), None)
    # Some configs (Qwen3.5, VL models) keep the size under text_config.
    hidden = config.get("hidden_size") or (config.get("text_config") or {}).get("hidden_size")
    if family is None:
        raise ConfigError(
            f"use_recommended_lr: {base_model!r} is a {model_type or 'unknown'!r} model; Tinker's LR "
            f"formula is calibrated for {' and '.join(FAMILY_EXPONENT)} models only",
            hint=NO_FORMULA_HINT,
        )
    if not hidden:
        raise ConfigError(f"use_recommended_lr: {base_model!r} has no hidden_size in its config.json", hint=NO_FORMULA_HINT)
    return formula_lr(int(hidden), family)


def _cookbook_lr(base_model: str) -> float:
    """A hub name: the cookbook knows the lineup's hidden sizes (no network for those)."""
    from tinker_cookbook import hyperparam_utils

    try:
        return float(hyperparam_utils.get_lr(base_model, is_lora=True))
    except Exception as exc:  # noqa: BLE001 - unknown family, uncalibrated model, or offline
        raise ConfigError(
            f"use_recommended_lr: no recommended LR for base_model {base_model!r} "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no details'})",
            hint=NO_FORMULA_HINT,
        ) from None


@lru_cache(maxsize=16)
def _recommended_cached(base_model: str) -> float:
    return recommended_lr(base_model)


def settings(config: Any) -> ScheduleSettings:
    """The ``[schedule]`` table (its defaults for a config built without the plugins' tables)."""
    try:
        return config.section("schedule")
    except KeyError:
        from tinkerplug_schedule.settings import ScheduleSettings

        return ScheduleSettings()


def base_lr(config: Any, floor: float) -> float:
    """``learning_rate``, or Tinker's recommended LR; refused below the decay's ``floor``."""
    base = _recommended_cached(config.base_model) if config.use_recommended_lr else config.learning_rate
    if floor > base:
        what = f"the recommended learning rate ({base:.4g}) for {config.base_model!r}" if config.use_recommended_lr else f"learning_rate ({base:g})"
        raise ConfigError(
            f"[schedule] min_lr ({floor:g}) is above {what}",
            hint="lower min_lr (it is the floor the schedule decays to)",
        )
    return base


def warmup_steps(table: ScheduleSettings, num_steps: int) -> int:
    if table.warmup_steps is not None:
        return min(table.warmup_steps, num_steps)
    # ceil, as Hugging Face does; the epsilon keeps 0.1 * 30 = 3.0000000000000004 at 3.
    return min(num_steps, math.ceil(table.warmup_ratio * num_steps - 1e-9))


def schedule(step: int, num_steps: int, base: float, floor: float, warmup: int, kind: str) -> float:
    """The formula of this module's docstring."""
    if step < warmup:
        return base * (step + 1) / warmup
    if kind == "constant":
        return base
    progress = (step - warmup) / max(1, num_steps - warmup)
    if kind == "linear":
        return floor + (base - floor) * (1 - progress)
    if kind == "cosine":
        return floor + (base - floor) * 0.5 * (1 + math.cos(math.pi * progress))
    raise ConfigError(f"lr_schedule {kind!r} is not one of cosine, linear, constant")


@tinkerplug.hookimpl
def register_config_sections(register: Any) -> None:
    from tinkerplug_schedule.settings import TOP_LEVEL_KEYS, ScheduleSettings

    register("schedule", ScheduleSettings, result_keys=tuple(ScheduleSettings.model_fields), top_level=TOP_LEVEL_KEYS)


@tinkerplug.hookimpl
def lr_for_step(step: int, num_steps: int, config: Any) -> float:
    table = settings(config)
    base = base_lr(config, table.min_lr)
    return schedule(step, num_steps, base, table.min_lr, warmup_steps(table, num_steps), table.lr_schedule)
