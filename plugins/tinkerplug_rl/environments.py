"""Cookbook environments inside ``tinkerplug run`` (``[rl] env = "FILE.py:NAME"`` or
``"module:NAME"``): ``NAME(renderer, config)`` returns a cookbook ``RLDatasetBuilder`` (awaited
for its training set) or an ``RLDataset``; each step trains on ``dataset.get_batch(step)`` (modulo
its length), rolled out with the cookbook's own ``do_group_rollout`` (multi-turn and tool-use
environments included), advantages by its ``compute_advantages`` and datums by its
``assemble_training_data``. The records of ``data.train`` are not used for prompts."""

from __future__ import annotations

import asyncio
import importlib
import importlib.util
import itertools
import math
import time
from pathlib import Path
from typing import Any

from tinkerplug import rollouts
from tinkerplug.backend_calls import await_result
from tinkerplug.hook_types import StepBatch
from tinkerplug.errors import ConfigError
from tinkerplug_rl.objective import RLObjective


def load_env(spec: str, base_dir: Path) -> Any:
    """The object ``FILE.py:NAME`` (relative to the config file) or ``module:NAME`` names."""
    where, sep, name = spec.rpartition(":")
    if not sep or not where or not name:
        raise ConfigError(f"[rl] env = {spec!r}: expected FILE.py:NAME or module:NAME")
    try:
        if where.endswith(".py"):
            path = (base_dir / where).resolve()
            module_spec = importlib.util.spec_from_file_location(f"tinkerplug_env_{path.stem}", path)
            if module_spec is None or not path.is_file():
                raise FileNotFoundError(f"no file {path}")
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            module = importlib.import_module(where)
        return getattr(module, name)
    except Exception as exc:  # noqa: BLE001 - one message, the user's file or module
        raise ConfigError(f"[rl] env = {spec!r}: cannot load it: {type(exc).__name__}: {exc}") from None


def seeded_completer(sampler: Any, settings: Any, seed: int, step: int) -> Any:
    """The cookbook's ``TokenCompleter`` on ``sampler``, each call seeded from the run's seed,
    the step and the call's number (single-turn environments resume exactly)."""
    from tinker import types
    from tinker_cookbook.completers import TokenCompleter, TokensWithLogprobs

    calls = itertools.count()

    class SeededCompleter(TokenCompleter):
        async def __call__(self, model_input: Any, stop: Any, *, max_tokens: int | None = None) -> Any:
            params = types.SamplingParams(
                max_tokens=max_tokens or settings.max_tokens, temperature=settings.temperature, stop=stop,
                seed=rollouts.sampling_seed(seed, step, next(calls), "env"),
            )
            sequence = (await await_result(sampler.sample(model_input, 1, params))).sequences[0]
            return TokensWithLogprobs(list(sequence.tokens), list(sequence.logprobs or []), sequence.stop_reason)

    return SeededCompleter()


class EnvironmentObjective(RLObjective):
    """RL on a cookbook environment's groups instead of the training records."""

    def __init__(self, run: Any, data: Any, settings: Any, make: Any):
        super().__init__(run, data, settings, rewards=None)  # type: ignore[arg-type]
        self.make, self.dataset = make, None

    async def open_dataset(self) -> Any:
        if self.dataset is None:
            made = self.make(self.run.renderer, self.run.config)
            if hasattr(made, "get_batch"):
                self.dataset = made
            else:
                self.dataset, _ = await made()
        return self.dataset

    async def batch(self, step: int) -> StepBatch:
        from tinker_cookbook.rl.data_processing import assemble_training_data, compute_advantages
        from tinker_cookbook.rl.rollouts import do_group_rollout

        started = time.perf_counter()
        dataset = await self.open_dataset()
        builders = dataset.get_batch(step % len(dataset))
        policy = seeded_completer(await self.policy_sampler(step), self.settings, self.run.config.seed, step)
        groups = list(await asyncio.gather(*(do_group_rollout(b, policy) for b in builders)))
        sampled_at = time.perf_counter()
        datums, _ = assemble_training_data(groups, compute_advantages(groups))
        totals = [g.get_total_rewards() for g in groups]
        flat = [r for g in totals for r in g]
        mean = sum(flat) / len(flat)
        metrics = {
            "rl/reward": mean,
            "rl/reward_std": math.sqrt(sum((r - mean) ** 2 for r in flat) / len(flat)),
            "rl/zero_variance_groups": sum(max(g) == min(g) for g in totals) / len(totals),
            "rl/completion_tokens": sum(len(t.ac.tokens) for g in groups for tr in g.trajectories_G for t in tr.transitions) / len(flat),
            "time/sample_s": sampled_at - started,
        }
        return StepBatch(datums, self.settings.loss, dict(self.settings.loss_config) or None, metrics, env_kl(datums))


def env_kl(datums: list[Any]) -> Any:
    """``rl/sampler_learner_kl`` over the sampled positions of the cookbook's datums (their
    advantage or sampler logprob is set)."""

    def summarize(output: Any) -> dict[str, float]:
        diffs = []
        for datum, item in zip(datums, output.loss_fn_outputs):
            sampled = datum.loss_fn_inputs["logprobs"].to_numpy()
            mask = (datum.loss_fn_inputs["advantages"].to_numpy() != 0) | (sampled != 0)
            diffs += list((sampled - item["logprobs"].to_numpy())[mask])
        return {"rl/sampler_learner_kl": float(sum(diffs) / max(len(diffs), 1))}

    return summarize

