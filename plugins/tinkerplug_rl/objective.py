"""One RL step: sample a group per prompt from the current policy, score each completion with
the configured rewards, centre the rewards within each group (GRPO), and send the sampled
tokens with the sampler's logprobs and those advantages to a Tinker RL loss."""

from __future__ import annotations

import math
import time
from typing import Any, Callable

from tinkerplug import rollouts
from tinkerplug.backend_calls import await_result
from tinkerplug.checkpoint_refs import open_reference_sampler
from tinkerplug.hook_types import StepBatch
from tinkerplug.errors import PluginError


class RewardSet:
    """The rewards a config names, each with its weight; every value checked."""

    def __init__(self, chosen: dict[str, float], registered: dict[str, tuple[str, Callable[..., Any]]], data: Any):
        self.items = [(name, weight, *registered[name]) for name, weight in chosen.items()]
        self.data = data

    def score(self, text: str, index: int, config: Any) -> dict[str, float]:
        """``{name: value}`` of one completion of record ``index``."""
        record = self.data.records[index]
        scores = {}
        for name, _, plugin, function in self.items:
            try:
                value = function(text, record, config)
            except Exception as exc:  # noqa: BLE001 - named with its plugin and record below
                raise PluginError(
                    f"reward {name!r} (plugin {plugin!r}) raised on record {self.data.where(index)}: {type(exc).__name__}: {exc}",
                    hint="fix the reward function; the run stopped, its checkpoints are as they were (--resume goes on)",
                ) from None
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise PluginError(
                    f"reward {name!r} (plugin {plugin!r}) returned {value!r} for record {self.data.where(index)}: "
                    "a reward must be a finite number (not NaN or infinite)",
                    hint="fix the reward function; the run stopped, its checkpoints are as they were (--resume goes on)",
                )
            scores[name] = float(value)
        return scores

    def total(self, scores: dict[str, float]) -> float:
        return sum(weight * scores[name] for name, weight, _, _ in self.items)


class RLObjective:
    def __init__(self, run: Any, data: Any, settings: Any, rewards: RewardSet):
        self.run, self.data, self.settings, self.rewards = run, data, settings, rewards
        self.sampler: Any = None
        self.reference: Any = None

    async def policy_sampler(self, step: int) -> Any:
        """The weights after ``step`` updates; with ``max_staleness`` N, refreshed every N+1
        steps (and at the step a run starts or resumes at)."""
        every = self.settings.max_staleness + 1
        if self.sampler is None or step % every == 0:
            record = self.settings.loss == "stable_reinforce"  # it trains on what the sampler recorded
            self.sampler = await await_result(self.run.training_client.save_weights_and_get_sampling_client(record_stability_info=record))
        return self.sampler

    async def batch(self, step: int) -> StepBatch:
        started = time.perf_counter()
        self.data.batch(step)  # keeps the render-ahead thread in step
        indices = self.data.batch_indices(step)
        sampler = await self.policy_sampler(step)
        prompts = [self.run.renderer.build_generation_prompt(rollouts.record_prompt(self.data, i, "rl")) for i in indices]
        seeds = [rollouts.sampling_seed(self.run.config.seed, step, slot) for slot in range(len(indices))]
        s = self.settings
        groups = await rollouts.sample_groups(sampler, self.run.renderer, prompts, s.group_size, s.max_tokens, s.temperature, seeds)
        sampled_at = time.perf_counter()
        scores = [[self.rewards.score(x.text, i, self.run.config) for x in group] for i, group in zip(indices, groups)]
        samples = [x for group in groups for x in group]
        advantages = [a for group in scores for a in group_advantages([self.rewards.total(sc) for sc in group], s.normalize_std)]
        token_advantages = [[a] * len(x.tokens) for a, x in zip(advantages, samples)]
        metrics = reward_metrics(scores, self.rewards)
        if s.kl_coef > 0 or (s.kl_every and step % s.kl_every == 0):
            metrics.update(await self.apply_kl(samples, token_advantages))
        metrics.update({
            "rl/completion_tokens": sum(len(x.tokens) for x in samples) / len(samples),
            "time/sample_s": sampled_at - started,
            "time/objective_s": time.perf_counter() - started,
        })
        provenance = s.loss == "stable_reinforce"
        gspo = s.loss == "gspo"  # its sequence ratio is over the sampled tokens
        datums = [rollouts.sampled_datum(x, adv, provenance, gspo) for x, adv in zip(samples, token_advantages)]
        summarize = lambda output: {"rl/sampler_learner_kl": sampler_learner_kl(output, samples)}  # noqa: E731
        return StepBatch(datums, s.loss, dict(s.loss_config) or None, metrics, summarize)

    async def apply_kl(self, samples: list[Any], token_advantages: list[list[float]]) -> dict[str, float]:
        """KL to the reference (``init_from`` or the base) per sampled token: logged, and with
        ``kl_coef`` subtracted from the advantages, centred (the cookbook's KL penalty)."""
        if self.reference is None:
            self.reference = open_reference_sampler(self.run.service_client, self.run.config)
        reference = await rollouts.completion_logprobs(self.reference, samples)
        diffs = [[lp - ref for lp, ref in zip(x.logprobs, r)] for x, r in zip(samples, reference)]
        flat = [d for row in diffs for d in row]
        mean = sum(flat) / max(len(flat), 1)
        if self.settings.kl_coef > 0:
            for adv, row in zip(token_advantages, diffs):
                for t, d in enumerate(row):
                    adv[t] -= self.settings.kl_coef * (d - mean)
        return {"rl/kl_reference": mean}


def group_advantages(rewards: list[float], normalize_std: bool) -> list[float]:
    """Rewards minus their group's mean (divided by its std with ``normalize_std``)."""
    mean = sum(rewards) / len(rewards)
    centred = [r - mean for r in rewards]
    if normalize_std:
        std = math.sqrt(sum(c * c for c in centred) / len(centred))
        centred = [c / (std + 1e-6) for c in centred]
    return centred


def reward_metrics(scores: list[list[dict[str, float]]], rewards: RewardSet) -> dict[str, float]:
    """Mean and std of the total reward and of each reward; the share of groups whose total
    reward does not vary (they teach nothing)."""
    totals = [[rewards.total(s) for s in group] for group in scores]
    metrics = {**_mean_std("rl/reward", [t for g in totals for t in g])}
    for name, *_ in rewards.items:
        metrics.update(_mean_std(f"rl/reward/{name}", [s[name] for g in scores for s in g]))
    metrics["rl/zero_variance_groups"] = sum(max(g) == min(g) for g in totals) / len(totals)
    return metrics


def _mean_std(key: str, values: list[float]) -> dict[str, float]:
    mean = sum(values) / len(values)
    return {key: mean, f"{key}_std": math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))}


def sampler_learner_kl(output: Any, samples: list[Any]) -> float:
    """Mean of sampler minus learner logprob over the sampled tokens (0 when on-policy)."""
    learner = rollouts.learner_logprobs(output, samples)
    diffs = [float(s - l) for x, lps in zip(samples, learner) for s, l in zip(x.logprobs, lps)]
    return sum(diffs) / max(len(diffs), 1)
