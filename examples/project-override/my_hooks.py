"""A project-local plugin: one hook, overridden for this project only.

``config.toml`` names this file (``plugins = ["./my_hooks.py"]``); ``tinkerplug run CONFIG
-p ./my_hooks.py`` does the same for a single run. Project files are called before installed
and first-party plugins, so this ``lr_for_step`` answers instead of the first-party schedule.

The schedule is warmup-stable-decay (WSD): linear warmup, constant, then a linear decay to
``min_lr`` over the last ``DECAY_FRACTION`` of the run.
"""

import tinkerplug

DECAY_FRACTION = 0.25


@tinkerplug.hookimpl
def lr_for_step(step, num_steps, config):
    schedule = config.section("schedule")  # this project's [schedule] table
    base, floor = config.learning_rate, schedule.min_lr
    warmup = schedule.warmup_steps or 0
    decay_start = round(num_steps * (1 - DECAY_FRACTION))
    if step < warmup:
        return base * (step + 1) / warmup
    if step < decay_start:
        return base
    return base + (floor - base) * (step - decay_start + 1) / (num_steps - decay_start)
