"""``forward`` / ``forward_backward`` requests of several training clients (one adapter each)
run as one mixed-adapter batch (mixed.py): their datums share microbatches, each datum with
its own adapter, and one backward per microbatch fills every adapter's gradients with exactly
its own requests' loss. Each request gets its own outputs and ``loss:sum``, as if it ran alone.

The worker (worker.py) hands over the head requests of several lanes that declared themselves
mergeable with ``TrainJob``; everything here runs on the host's worker thread.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable


@dataclass
class TrainJob:
    client: Any  # the TrainingClient (its host, adapter and residency entry)
    data: list[Any]  # tinker Datums, checked at submission
    loss_of: Callable[[int, Any], Any]  # (datum index, logprobs) -> that datum's summed loss
    backward: bool
    solo: Callable[[], Any]  # the request run alone: the fallback when the model cannot mix adapters


def merge_key(client: Any, backward: bool) -> tuple[str, bool]:
    """Requests with equal keys may share a batch: the same kind (forward or forward_backward).
    One worker serves one base model, so the base is the same; ranks and target modules may
    differ (each adapter applies to its own rows only)."""
    return ("forward_backward" if backward else "forward", backward)


def run_jobs(jobs: list[TrainJob]) -> list[Any]:
    """Each job's ``ForwardBackwardOutput`` (or the exception it raised), in order."""
    host = jobs[0].client._host
    limit = host.residency.limit
    chunks = [jobs[i : i + limit] for i in range(0, len(jobs), limit)] if limit > 0 else [jobs]
    results: list[Any] = []
    for chunk in chunks:  # --max-adapters: never more adapters at once than may be resident
        results += _run_chunk(host, chunk)
    return results


def _run_chunk(host: Any, jobs: list[TrainJob]) -> list[Any]:
    from tinkerplug_local.forward import can_mix
    from tinkerplug_local.mixed import MixedLora, lora_layers

    for job in jobs:
        host.residency.touch(job.client)
    # Side by side with other threads (host.shared), even one job runs mixed: the solo path
    # switches PEFT's active adapter, which every thread would see.
    layers = lora_layers(host.peft) if len(jobs) > 1 or host.shared else None
    if layers is None or not can_mix(host.peft, host.device, host.forward_options):
        with host.solo_lock:  # a model that cannot mix: shared jobs run one at a time after all
            return [_solo(job) for job in jobs]
    if len(jobs) > 1:
        host.count_mixed(len(jobs))
    with MixedLora(host.peft, layers) as mixer:
        return _run_isolated(host, mixer, jobs)


def _run_isolated(host: Any, mixer: Any, jobs: list[TrainJob]) -> list[Any]:
    """The jobs as one batch. If it fails part way (a loss raising, memory running out), the
    microbatches before have already added to every adapter's gradients: those go back to what
    they were, and each job runs again alone, so one key's failing request leaves nothing in
    another key's adapter (nor in its own)."""
    kept = [_gradients(job) for job in jobs]
    try:
        return _run_mixed(host, mixer, jobs)
    except Exception as exc:  # noqa: BLE001 - delivered to that request's future
        for grads in kept:
            for param, grad in grads:
                param.grad = grad
        if len(jobs) == 1:
            return [exc]
        return [result for job in jobs for result in _run_isolated(host, mixer, [job])]


def _gradients(job: TrainJob) -> list[tuple[Any, Any]]:
    """Each of the job's adapter tensors with a copy of its gradient (None: none yet, the usual
    case after an ``optim_step``, so nothing is copied)."""
    return [(p, None if p.grad is None else p.grad.clone()) for p in job.client._params()] if job.backward else []


def _solo(job: TrainJob) -> Any:
    try:
        return job.solo()
    except Exception as exc:  # noqa: BLE001 - delivered to that request's future
        return exc


def _run_mixed(host: Any, mixer: Any, jobs: list[TrainJob]) -> list[Any]:
    import torch
    from tinker import types

    from tinkerplug_local.forward import microbatch_logprobs

    owners = [(j, i) for j, job in enumerate(jobs) for i in range(len(job.data))]
    datums = [d for job in jobs for d in job.data]
    tokens = [d.model_input.to_ints() for d in datums]
    targets = [d.loss_fn_inputs["target_tokens"].to_torch().long() for d in datums]
    adapters = [jobs[j].client._adapter for j, _ in owners]
    outputs: list[list[Any]] = [[None] * len(job.data) for job in jobs]
    totals = [0.0] * len(jobs)
    backward = jobs[0].backward
    for job in jobs if backward else []:  # PEFT marks only the active adapter trainable
        for param in job.client._params():
            param.requires_grad_(True)
    pad = host.tokenizer.pad_token_id or 0
    batches = microbatch_logprobs(host.peft, tokens, targets, host.device, pad, grad=backward,
                                  options=host.forward_options, mixed=(mixer, adapters))
    for batch in batches:
        with torch.set_grad_enabled(backward):
            losses: dict[int, Any] = {}
            for k, lp in zip(batch.indices, batch.logprobs):
                j, i = owners[k]
                losses[j] = losses.get(j, 0) + jobs[j].loss_of(i, lp)
                outputs[j][i] = {"logprobs": types.TensorData.from_torch(lp.detach().cpu())}
            if backward:
                sum(losses.values()).backward()  # each adapter's gradient comes from its own rows only
        for j, loss in losses.items():
            totals[j] += float(loss.detach())
    return [
        types.ForwardBackwardOutput(loss_fn_output_type="TensorData", loss_fn_outputs=out, metrics={"loss:sum": total})
        for out, total in zip(outputs, totals)
    ]
