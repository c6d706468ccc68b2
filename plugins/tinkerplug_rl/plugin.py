"""``objective = "rl"``: the ``[rl]`` table and the objective (see ``objective.py``)."""

from __future__ import annotations

import difflib
from typing import Any

import tinkerplug
from tinkerplug.errors import ConfigError


@tinkerplug.hookimpl
def register_config_sections(register: Any) -> None:
    from tinkerplug_rl.settings import RESULT_KEYS, RLSettings

    register("rl", RLSettings, result_keys=RESULT_KEYS)


@tinkerplug.hookimpl
def register_objectives(register: Any) -> None:
    register("rl", "reinforcement learning: sampled groups, [rl.rewards], group-relative advantages, an RL loss")


@tinkerplug.hookimpl
def make_objective(config: Any, run: Any, data: Any) -> Any:
    if config.objective != "rl":
        return None
    from tinkerplug_rl.objective import RewardSet, RLObjective

    settings = config.section("rl")
    if settings.groups_per_batch is not None and settings.groups_per_batch != config.batch_size:
        raise ConfigError(
            f"[rl] groups_per_batch = {settings.groups_per_batch} but batch_size = {config.batch_size}: "
            "the prompts of a step are the core's batch",
            hint=f"set batch_size = {settings.groups_per_batch} (and drop groups_per_batch, or keep both equal)",
        )
    if settings.env:
        from pathlib import Path

        from tinkerplug_rl.environments import EnvironmentObjective, load_env

        base = Path(config.source).parent if config.source else Path.cwd()
        return EnvironmentObjective(run, data, settings, load_env(settings.env, base))
    registered = run.plugins.register_rewards()
    for name in settings.rewards:
        if name not in registered:
            close = difflib.get_close_matches(name, list(registered), n=1)
            raise ConfigError(
                f"[rl.rewards] {name!r} is not a registered reward" + (f"; did you mean {close[0]!r}?" if close else ""),
                hint=f"rewards: {', '.join(sorted(registered))} (a plugin adds one with register_rewards)",
            )
    from tinkerplug import rollouts

    rollouts.check_prompts(data, run.start_step, "rl")
    return RLObjective(run, data, settings, RewardSet(settings.rewards, registered, data))

