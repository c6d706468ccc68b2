"""Turning a finished step's outputs into a ``StepResult`` (loss, token counts, timing). Shared by
every step executor."""

from __future__ import annotations

import time
from typing import Any

from tinkerplug.hook_types import StepBatch, StepResult, as_step_batch


def sampled_positions(datum: Any) -> int:
    """The positions an RL datum trains: those the sampler produced. The cookbook's layout puts
    a logprob and an advantage there and zeros on the prompt (a sampled token whose logprob
    rounds to 0 in a group whose advantages are 0 is missed: it changes nothing either)."""
    import numpy as np

    inputs = datum.loss_fn_inputs
    if "sequence_ratio_mask" in inputs:
        return int((inputs["sequence_ratio_mask"].to_numpy() != 0).sum())
    marks = [inputs[key].to_numpy() != 0 for key in ("logprobs", "advantages") if key in inputs]
    return int(np.logical_or.reduce(marks).sum()) if marks else datum.model_input.length


def step_result(
    step: int,
    batch: StepBatch | list[Any],
    fwd_bwd_output: Any,
    optim_output: Any,
    learning_rate: float,
    submitted_at: float,
) -> StepResult:
    """Train NLL computed client-side, as the service defines it: sum(-logprob * weight).
    Datums without ``weights`` (the RL losses) report the loss's own ``loss:sum`` per
    target token. The batch's own metrics and its ``summarize`` (the objective's, on the
    backend's output) go into the step's row."""
    batch = as_step_batch(batch)
    data = batch.datums
    loss_sum = 0.0
    weight_sum = 0.0
    trained_tokens = 0
    for datum, output in zip(data, fwd_bwd_output.loss_fn_outputs, strict=True):
        if "weights" not in datum.loss_fn_inputs:
            trained_tokens += sampled_positions(datum)
            continue
        logprobs = output["logprobs"].to_numpy()
        weights = datum.loss_fn_inputs["weights"].to_numpy()
        loss_sum += float(-(logprobs * weights).sum())
        weight_sum += float(weights.sum())
        # (T, k) soft targets (top-k distillation): a position counts once, not once per candidate
        trained_tokens += int((weights > 0).any(axis=-1).sum() if weights.ndim > 1 else (weights > 0).sum())
    if not weight_sum and trained_tokens:
        loss_sum = float((getattr(fwd_bwd_output, "metrics", None) or {}).get("loss:sum", float("nan")))
        weight_sum = float(trained_tokens)
    finished_at = time.perf_counter()
    metrics = {
        "train/trained_tokens": float(trained_tokens),
        "train/input_tokens": float(sum(d.model_input.length for d in data)),
        # Submission to result: with a pipelined executor, longer than the time between steps.
        "time/latency_s": finished_at - submitted_at,
    }
    for key, value in (getattr(optim_output, "metrics", None) or {}).items():
        metrics[f"optim/{key}"] = float(value)
    metrics.update(batch.metrics)
    if batch.summarize is not None:
        metrics.update(batch.summarize(fwd_bwd_output))
    return StepResult(
        step=step,
        loss_sum=loss_sum,
        weight_sum=weight_sum,
        num_tokens=trained_tokens,
        num_examples=len(data),
        learning_rate=learning_rate,
        submitted_at=submitted_at,
        finished_at=finished_at,
        metrics=metrics,
    )
