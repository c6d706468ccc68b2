"""Distillation steps. ``off_policy``: the teacher samples replies to the step's prompts and
the student trains ``cross_entropy`` on them (SFT on teacher samples); ``teacher_kl`` is the
forward KL on those samples (teacher minus student logprob per token). ``on_policy`` (the
cookbook's ``train_on_policy``): the student samples, the teacher scores the samples with
``compute_logprobs``, and ``-kl_coef * (student - teacher)`` per token is the advantage of an
``importance_sampling`` step; ``teacher_kl`` is that reverse KL. ``top_k``: the rendered
records with the teacher's top-k next-token distribution as soft targets."""

from __future__ import annotations

import time
from typing import Any

from tinkerplug import rollouts
from tinkerplug.backend_calls import await_result
from tinkerplug.hook_types import StepBatch


class DistillObjective:
    def __init__(self, run: Any, data: Any, settings: Any, teacher: Any):
        self.run, self.data, self.settings, self.teacher = run, data, settings, teacher

    async def batch(self, step: int) -> StepBatch:
        started = time.perf_counter()
        if self.settings.mode == "top_k":
            return await soft_target_batch(self.teacher, self.data.batch(step), self.settings.top_k, started)
        self.data.batch(step)  # keeps the render-ahead thread in step
        indices = self.data.batch_indices(step)
        prompts = [self.run.renderer.build_generation_prompt(rollouts.record_prompt(self.data, i, "distill")) for i in indices]
        on_policy = self.settings.mode == "on_policy"
        what = "policy" if on_policy else "teacher"
        seeds = [rollouts.sampling_seed(self.run.config.seed, step, slot, what) for slot in range(len(indices))]
        sampler = await await_result(self.run.training_client.save_weights_and_get_sampling_client()) if on_policy else self.teacher
        s = self.settings
        groups = await rollouts.sample_groups(sampler, self.run.renderer, prompts, s.samples_per_prompt, s.max_tokens, s.temperature, seeds)
        samples = [x for group in groups for x in group]
        metrics = {
            "distill/completion_tokens": sum(len(x.tokens) for x in samples) / len(samples),
            "time/sample_s": time.perf_counter() - started,
        }
        if on_policy:
            return await self.on_policy_batch(samples, metrics)
        datums = [rollouts.supervised_datum(x) for x in samples]
        return StepBatch(datums, metrics=metrics, summarize=lambda output: {"distill/teacher_kl": forward_kl(output, samples)})

    async def on_policy_batch(self, samples: list[Any], metrics: dict[str, float]) -> StepBatch:
        teacher = await rollouts.completion_logprobs(self.teacher, samples)
        reverse = [[lp - t for lp, t in zip(x.logprobs, row)] for x, row in zip(samples, teacher)]
        flat = [d for row in reverse for d in row]
        metrics["distill/teacher_kl"] = sum(flat) / max(len(flat), 1)
        advantages = [[-self.settings.kl_coef * d for d in row] for row in reverse]
        datums = [rollouts.sampled_datum(x, adv) for x, adv in zip(samples, advantages)]
        return StepBatch(datums, "importance_sampling", metrics=metrics)


def forward_kl(output: Any, samples: list[Any]) -> float:
    """Mean teacher minus student logprob over the teacher's sampled tokens."""
    student = rollouts.learner_logprobs(output, samples)
    diffs = [float(t - s) for x, lps in zip(samples, student) for t, s in zip(x.logprobs, lps)]
    return sum(diffs) / max(len(diffs), 1)


async def soft_target_batch(teacher: Any, datums: list[Any], k: int, started: float) -> StepBatch:
    """The step's rendered examples with the teacher's top-``k`` next-token distribution as
    ``(T, k)`` soft targets (renormalized over the k, times each position's weight): the
    service's ``cross_entropy`` with soft targets, one teacher prefill per example."""
    import asyncio

    import numpy as np
    from tinker import types

    async def topk(datum: Any) -> Any:
        tokens = datum.model_input.to_ints()[:1] + datum.loss_fn_inputs["target_tokens"].to_numpy().tolist()
        params = types.SamplingParams(max_tokens=1, temperature=1.0, seed=0)
        future = teacher.sample(types.ModelInput.from_ints(tokens), 1, params, include_prompt_logprobs=True, topk_prompt_logprobs=k)
        return (await await_result(future)).topk_prompt_logprobs

    tables = await asyncio.gather(*(topk(d) for d in datums))
    soft, teacher_lps = [], []
    for datum, table in zip(datums, tables):
        weights = datum.loss_fn_inputs["weights"].to_numpy()
        ids = np.array([[t for t, _ in row[:k]] for row in table[1:]], dtype=np.int64)
        lps = np.array([[lp for _, lp in row[:k]] for row in table[1:]], dtype=np.float64)
        probs = np.exp(lps - lps.max(axis=1, keepdims=True))
        probs /= probs.sum(axis=1, keepdims=True)
        soft.append(types.Datum(model_input=datum.model_input, loss_fn_inputs={
            "target_tokens": types.TensorData.from_numpy(ids),
            "weights": types.TensorData.from_numpy((probs * weights[:, None]).astype(np.float32)),
        }))
        teacher_lps.append((np.log(probs), weights > 0))
    metrics = {"time/sample_s": time.perf_counter() - started}
    return StepBatch(soft, metrics=metrics, summarize=lambda output: {"distill/teacher_kl": topk_kl(output, teacher_lps)})


def topk_kl(output: Any, teacher_lps: list[Any]) -> float:
    """Forward KL over the teacher's top-k (renormalized) at the trained positions."""
    import numpy as np

    total, count = 0.0, 0
    for item, (lps, mask) in zip(output.loss_fn_outputs, teacher_lps):
        student = item["logprobs"].to_numpy()
        total += float((np.exp(lps) * (lps - student))[mask].sum())
        count += int(mask.sum())
    return total / max(count, 1)
