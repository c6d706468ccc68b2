"""Batched generation for the local sampling clients: every request queued while the worker was
busy runs as one batch (grouped by adapter, similar prompt lengths together), and each caller's
future gets the SDK's ``SampleResponse``."""

from __future__ import annotations

import contextlib
import dataclasses
import uuid
from dataclasses import dataclass
from typing import Any, Iterator

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
    """Run every queued request: the ``compute_logprobs`` ones in one forward, the samples in
    generation batches; grouped by adapter, or all adapters in one batch (``mixed_batches``).
    Each snapshot's weights go into a sampler slot first (``ModelHost.bind``)."""
    batch = [(request, future) for request, future in batch if future.set_running_or_notify_cancel()]
    try:
        bound = host.bind({request.adapter for request, _ in batch})
    except BaseException as exc:  # noqa: BLE001 - each caller gets the error
        return _fail(batch, exc)
    groups: dict[tuple[Any, bool], list[tuple[Any, Any]]] = {}
    for request, future in batch:
        request = dataclasses.replace(request, adapter=bound[request.adapter])
        adapter = _MIXED if host.mixed_batches else request.adapter
        groups.setdefault((adapter, isinstance(request, LogprobsRequest)), []).append((request, future))
    for (_, logprobs_only), items in groups.items():
        _run_group(host, items, logprobs_only)


def _run_group(host: Any, items: list[tuple[Any, Any]], logprobs_only: bool) -> None:
    """One generation (or logprobs) batch. If it fails, each request not yet answered runs
    again alone: one client's request that the checks at submission let through and that then
    fails (memory, a bug) fails only itself, not every key's request batched with it."""
    try:
        with _mixing(host, {r.adapter for r, _ in items}) as mixer:
            (_deliver_logprobs if logprobs_only else _deliver_samples)(host, items, mixer)
    except Exception as exc:  # noqa: BLE001 - each caller gets the error
        if len(items) == 1:
            return _fail(items, exc)
        for item in items:
            if not item[1].done():
                _run_group(host, [item], logprobs_only)
    except BaseException as exc:  # noqa: BLE001 - interrupted: each caller gets it
        _fail(items, exc)


def _fail(items: list[tuple[Any, Any]], exc: BaseException) -> None:
    for _, future in items:
        if not future.done():
            future.set_exception(exc)


_MIXED = object()  # the group key of every adapter's requests when they share a batch


@contextlib.contextmanager
def _mixing(host: Any, adapters: set[Any]) -> Iterator[Any]:
    """An entered ``MixedLora`` when the requests have several adapters and the model can mix
    them (mixed.py); None when there is one adapter."""
    from tinkerplug_local.forward import can_mix
    from tinkerplug_local.mixed import MixedLora, lora_layers

    layers = lora_layers(host.peft) if len(adapters) > 1 and host.peft is not None else None
    if layers is None or not can_mix(host.peft, host.device, host.forward_options):
        if len(adapters) > 1:  # not mixable: one batch per adapter
            yield _PER_ADAPTER
        else:
            yield None
        return
    host.mixed_samples += 1
    with MixedLora(host.peft, layers) as mixer:
        yield mixer


_PER_ADAPTER = object()


def _split_by_adapter(host: Any, items: list[tuple[Any, Any]], deliver: Any) -> None:
    by_adapter: dict[Any, list[tuple[Any, Any]]] = {}
    for request, future in items:
        by_adapter.setdefault(request.adapter, []).append((request, future))
    for group in by_adapter.values():
        deliver(host, group, None)


def _deliver_logprobs(host: Any, items: list[tuple[LogprobsRequest, Any]], mixer: Any) -> None:
    from tinkerplug_local.generate import batched_prompt_logprobs

    if mixer is _PER_ADAPTER:
        return _split_by_adapter(host, items, _deliver_logprobs)
    adapters = [r.adapter for r, _ in items]
    model = host.peft if mixer is not None else host.model_for(adapters[0])
    results = batched_prompt_logprobs(model, [r.prompt for r, _ in items], [r.last_n for r, _ in items], host.device,
                                      host.tokenizer.pad_token_id or 0, host.forward_options,
                                      (mixer, adapters) if mixer is not None else None)
    for (_, future), result in zip(items, results):
        future.set_result(result)


def _deliver_samples(host: Any, items: list[tuple[SampleRequest, Any]], mixer: Any) -> None:
    if mixer is _PER_ADAPTER:
        return _split_by_adapter(host, items, _deliver_samples)
    rows_of = [_rows(request, host) for request, _ in items]
    if mixer is None:
        _generate_all(host.model_for(items[0][0].adapter), host, [row for rows in rows_of for row in rows])
    else:
        _generate_all(host.peft.get_base_model(), host, [row for rows in rows_of for row in rows], mixer)
    for (request, future), rows in zip(items, rows_of):
        try:  # prompt logprobs, when asked for: per request, with its own adapter
            future.set_result(_response(host, request, _sequences(request, rows)))
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
            adapter=request.adapter,
        )
        for k in range(request.num_samples)
    ]


def _generate_all(model: Any, host: Any, rows: list[Any], mixer: Any = None) -> None:
    from tinkerplug_local.generate import generate
    from tinkerplug_local.mixed import grouped

    pad_id = host.tokenizer.pad_token_id or 0
    # Similar lengths together (less padding), equal prompts next to each other (one prefill);
    # in a mixed batch, each adapter's rows next to each other within a batch (mixed.py).
    ordered = sorted(rows, key=lambda r: (len(r.prompt), r.prompt))
    for start in range(0, len(ordered), MAX_BATCH_ROWS):
        chunk = ordered[start : start + MAX_BATCH_ROWS]
        if mixer is not None:
            chunk = [chunk[i] for i in grouped(range(len(chunk)), [r.adapter for r in chunk])]
        generate(model, chunk, pad_id, host.tokenizer, host.device, mixer)


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


def _response(host: Any, request: SampleRequest, sequences: list[Any]) -> types.SampleResponse:
    """The SDK's response type, with prompt logprobs (and their top-k) when asked for."""
    from tinkerplug_local.generate import prompt_scores

    if not (request.include_prompt_logprobs or request.topk_prompt_logprobs):
        return types.SampleResponse(sequences=sequences)
    values, topk = prompt_scores(
        host.model_for(request.adapter), request.prompt, host.device, request.topk_prompt_logprobs,
        request.prompt_logprobs_last_n, host.forward_options,
    )
    return types.SampleResponse(
        sequences=sequences,
        prompt_logprobs_np=values if request.include_prompt_logprobs else None,
        topk_prompt_logprobs_np=topk,
    )
