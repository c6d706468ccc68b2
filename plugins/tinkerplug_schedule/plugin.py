"""The learning rate per step: linear warmup, then cosine / linear / constant decay to min_lr.

With ``warmup`` steps W, base LR B, floor M and N steps::

    step < W:   B * (step + 1) / W
    after:      p = (step - W) / (N - W)
                cosine:   M + (B - M) * (1 + cos(pi * p)) / 2
                linear:   M + (B - M) * (1 - p)
                constant: B
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import tinkerplug
from tinkerplug.errors import ConfigError
from tinkerplug.models import local_model_config

# Tinker's LoRA LR formula: 5e-5 * 10 * (2000 / hidden_size) ** P, P by model family
# (the values of tinker_cookbook.hyperparam_utils.get_lr).
FAMILY_EXPONENT = {"llama": 0.781, "qwen": 0.0775}


def recommended_lr(base_model: str) -> float:
    config = local_model_config(base_model)
    if config is None:  # a hub id: the cookbook knows the lineup's hidden sizes
        from tinker_cookbook import hyperparam_utils

        try:
            return float(hyperparam_utils.get_lr(base_model, is_lora=True))
        except Exception as exc:  # noqa: BLE001
            raise ConfigError(
                f"use_recommended_lr: no LR formula for base_model {base_model!r} ({type(exc).__name__}: {exc})",
                hint="set learning_rate and use_recommended_lr = false",
            ) from None
    family = next((f for f in FAMILY_EXPONENT if f in str(config.get("model_type", "")).lower()), None)
    hidden = config.get("hidden_size")
    if family is None or not hidden:
        raise ConfigError(
            f"use_recommended_lr: model family {config.get('model_type')!r} of {base_model!r} has no calibrated formula "
            f"(known: {', '.join(FAMILY_EXPONENT)})",
            hint="set learning_rate and use_recommended_lr = false",
        )
    return 5e-5 * 10 * (2000 / hidden) ** FAMILY_EXPONENT[family]


@lru_cache(maxsize=8)
def _recommended_cached(base_model: str) -> float:
    return recommended_lr(base_model)


def base_lr(config: Any) -> float:
    return _recommended_cached(config.base_model) if config.use_recommended_lr else config.learning_rate


def warmup_steps(config: Any, num_steps: int) -> int:
    if config.warmup_steps is not None:
        return min(config.warmup_steps, num_steps)
    return int(round(config.warmup_ratio * num_steps))


def schedule(step: int, num_steps: int, base: float, floor: float, warmup: int, kind: str) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    if kind == "constant":
        return base
    progress = (step - warmup) / max(1, num_steps - warmup)
    if kind == "linear":
        return floor + (base - floor) * (1 - progress)
    return floor + (base - floor) * 0.5 * (1 + math.cos(math.pi * progress))


@tinkerplug.hookimpl
def lr_for_step(step: int, num_steps: int, config: Any) -> float:
    base = base_lr(config)
    floor = min(config.min_lr, base)
    return schedule(step, num_steps, base, floor, warmup_steps(config, num_steps), config.lr_schedule)
