"""Batched generation for the local sampling clients: every request queued while the worker was
busy runs as one batch (grouped by adapter, similar prompt lengths together), and each caller's
future gets the SDK's ``SampleResponse``."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

from tinker import types

MAX_BATCH_ROWS = 64


@dataclass
class SampleRequest:
    adapter: str | None
    prompt: list[int]
    num_samples: int
    params: types.SamplingParams
    include_prompt_logprobs: bool
    topk_prompt_logprobs: int = 0
    prompt_logprobs_last_n: int | None = None
    sequence_ids: list[str] | None = None  # fixed at submission (serve); else made here
    record: tuple[Any, str | None] | None = None  # (StabilityStore, owner): record_stability_info


def _stops(params: types.SamplingParams, host: Any) -> tuple[set[int], list[str]]:
    stop = params.stop
    if stop is None:  # the SDK's default: stop at end-of-sequence
        eos = host.tokenizer.eos_token_id
        extra = getattr(getattr(host.model, "generation_config", None), "eos_token_id", None)
        ids = {eos} if eos is not None else set()
        ids |= set(extra) if isinstance(extra, list) else ({extra} if extra is not None else set())
        return ids, []
    if isinstance(stop, str):
        return set(), [stop]
    stop = list(stop)
    if all(isinstance(s, int) for s in stop):
        return set(stop), []
    return set(), [str(s) for s in stop]


@dataclass
class LogprobsRequest:
    """``compute_logprobs``: queued with the samples, so that the prompts of many requests (a
    DPO step's reference, a KL's) share one forward."""

    adapter: str | None
    prompt: list[int]
    last_n: int | None = None


def run_sample_batch(host: Any, batch: list[tuple[Any, Any]]) -> None:
    """Run every queued request, grouped by adapter: the ``compute_logprobs`` ones in one forward,
    the samples in generation batches."""
    by_adapter: dict[tuple[str | None, bool], list[tuple[Any, Any]]] = {}
    for request, future in batch:
        if future.set_running_or_notify_cancel():
            by_adapter.setdefault((request.adapter, isinstance(request, LogprobsRequest)), []).append((request, future))
    for (adapter, logprobs_only), items in by_adapter.items():
        if logprobs_only:
            _deliver_logprobs(host, adapter, items)
        else:
            _deliver_samples(host, adapter, items)


def _deliver_logprobs(host: Any, adapter: str | None, items: list[tuple[LogprobsRequest, Any]]) -> None:
    from tinkerplug_local.generate import batched_prompt_logprobs

    try:
        results = batched_prompt_logprobs(host.model_for(adapter), [r.prompt for r, _ in items], [r.last_n for r, _ in items],
                                          host.device, host.tokenizer.pad_token_id or 0, host.forward_options)
    except BaseException as exc:  # noqa: BLE001 - each caller gets the error
        for _, future in items:
            future.set_exception(exc)
        return
    for (_, future), result in zip(items, results):
        future.set_result(result)


def _deliver_samples(host: Any, adapter: str | None, items: list[tuple[SampleRequest, Any]]) -> None:
    try:
        model = host.model_for(adapter)
        rows_of = [_rows(request, host) for request, _ in items]
        _generate_all(model, host, [row for rows in rows_of for row in rows])
    except BaseException as exc:  # noqa: BLE001 - each caller gets the error
        for _, future in items:
            future.set_exception(exc)
        return
    for (request, future), rows in zip(items, rows_of):
        try:
            future.set_result(_response(model, host, request, _sequences(request, rows)))
        except BaseException as exc:  # noqa: BLE001 - delivered to the caller
            future.set_exception(exc)


def _rows(request: SampleRequest, host: Any) -> list[Any]:
    """One generation row per requested sample; sample k of a seeded request is seeded seed + k."""
    import torch

    from tinkerplug_local.generate import Row

    stop_ids, stop_strings = _stops(request.params, host)
    params = request.params
    return [
        Row(
            prompt=request.prompt,
            max_tokens=params.max_tokens or 128,
            temperature=params.temperature,
            top_k=params.top_k,
            top_p=params.top_p,
            stop_ids=stop_ids,
            stop_strings=stop_strings,
            generator=torch.Generator().manual_seed(params.seed + k) if params.seed is not None else None,
        )
        for k in range(request.num_samples)
    ]


def _generate_all(model: Any, host: Any, rows: list[Any]) -> None:
    from tinkerplug_local.generate import generate

    pad_id = host.tokenizer.pad_token_id or 0
    # Similar lengths together (less padding), equal prompts next to each other (one prefill).
    ordered = sorted(rows, key=lambda r: (len(r.prompt), r.prompt))
    for start in range(0, len(ordered), MAX_BATCH_ROWS):
        generate(model, ordered[start : start + MAX_BATCH_ROWS], pad_id, host.tokenizer, host.device)


def _sequences(request: SampleRequest, rows: list[Any]) -> list[types.SampledSequence]:
    """The SDK's sequences; with ``record``, each is recorded in the stability store first."""
    ids = request.sequence_ids or [uuid.uuid4().hex for _ in rows]
    if request.record is not None:
        store, owner = request.record
        store.put(owner, request.prompt, [(i, row.tokens, row.logprobs) for i, row in zip(ids, rows)])
    return [
        types.SampledSequence(stop_reason=row.stop_reason, sequence_id=i, _tokens_list=row.tokens, _logprobs_list=row.logprobs)
        for i, row in zip(ids, rows)
    ]


def _response(model: Any, host: Any, request: SampleRequest, sequences: list[Any]) -> types.SampleResponse:
    """The SDK's response type, with prompt logprobs (and their top-k) when asked for."""
    from tinkerplug_local.generate import prompt_scores

    if not (request.include_prompt_logprobs or request.topk_prompt_logprobs):
        return types.SampleResponse(sequences=sequences)
    values, topk = prompt_scores(
        model, request.prompt, host.device, request.topk_prompt_logprobs, request.prompt_logprobs_last_n, host.forward_options
    )
    return types.SampleResponse(
        sequences=sequences,
        prompt_logprobs_np=values if request.include_prompt_logprobs else None,
        topk_prompt_logprobs_np=topk,
    )
