"""The local ``SamplingClient``: frozen sampler weights, batched generation, prompt logprobs."""

from __future__ import annotations

import uuid
import weakref
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


class SamplingClient:
    """Samples from sampler weights saved by ``save_weights_for_sampler`` (a frozen copy read back
    from disk) or from the base model. Methods and return types follow ``tinker.SamplingClient``."""

    def __init__(self, host: Any, adapter: str | None, base_model: str, model_path: str | None):
        self._host = host
        self._adapter = adapter
        self._base_model = base_model
        self.model_path = model_path
        if adapter is not None:  # free the adapter when the client goes away
            # ... but not at interpreter exit: torch work on a daemon thread then aborts Python.
            weakref.finalize(self, _release, host, adapter).atexit = False

    @classmethod
    def from_saved(cls, host: Any, model_path: str) -> "SamplingClient":
        """Runs on the worker: sampler weights read back from a ``save_weights_for_sampler`` dir."""
        from tinkerplug_local.store import to_path

        return cls(host, host.load_frozen_adapter(str(to_path(model_path))), host.source.name, model_path)

    @classmethod
    def from_snapshot(cls, host: Any, adapter: str, model_path: str | None) -> "SamplingClient":
        """Runs on the worker: a frozen in-memory copy of training adapter ``adapter`` as it is now."""
        return cls(host, host.snapshot_adapter(adapter), host.source.name, model_path)

    def sample(
        self,
        prompt: types.ModelInput,
        num_samples: int,
        sampling_params: types.SamplingParams,
        include_prompt_logprobs: bool = False,
        topk_prompt_logprobs: int = 0,
        topk_sample_logprobs: int = 0,
        target_prompt_logprobs: types.TensorData | None = None,
        prompt_alt_tokens_k: int = 0,
        prompt_logprobs_last_n: int | None = None,
    ) -> Any:
        unsupported = dict(
            topk_sample_logprobs=topk_sample_logprobs,
            target_prompt_logprobs=target_prompt_logprobs,
            prompt_alt_tokens_k=prompt_alt_tokens_k,
        )
        names = [name for name, value in unsupported.items() if value]
        if names:
            raise NotImplementedError(
                f"the local backend does not support {', '.join(names)}; it supports include_prompt_logprobs, "
                "topk_prompt_logprobs and prompt_logprobs_last_n"
            )
        if num_samples < 1:
            raise ValueError("num_samples must be >= 1")
        if topk_prompt_logprobs < 0 or (prompt_logprobs_last_n is not None and prompt_logprobs_last_n < 0):
            raise ValueError("topk_prompt_logprobs and prompt_logprobs_last_n must be >= 0")
        request = SampleRequest(
            self._adapter, prompt.to_ints(), num_samples, sampling_params, include_prompt_logprobs,
            topk_prompt_logprobs, prompt_logprobs_last_n,
        )
        return self._host.submit_sample(request)

    async def sample_async(
        self,
        prompt: types.ModelInput,
        num_samples: int,
        sampling_params: types.SamplingParams,
        include_prompt_logprobs: bool = False,
        topk_prompt_logprobs: int = 0,
        topk_sample_logprobs: int = 0,
        target_prompt_logprobs: types.TensorData | None = None,
        prompt_alt_tokens_k: int = 0,
        prompt_logprobs_last_n: int | None = None,
    ) -> types.SampleResponse:
        return await self.sample(
            prompt, num_samples, sampling_params, include_prompt_logprobs, topk_prompt_logprobs,
            topk_sample_logprobs, target_prompt_logprobs, prompt_alt_tokens_k, prompt_logprobs_last_n,
        ).result_async()

    def compute_logprobs(self, prompt: types.ModelInput, prompt_logprobs_last_n: int | None = None) -> Any:
        host, adapter, tokens = self._host, self._adapter, prompt.to_ints()

        def run() -> list[float | None]:
            from tinkerplug_local.generate import prompt_logprobs

            return prompt_logprobs(host.model_for(adapter), tokens, host.device, prompt_logprobs_last_n, host.forward_options)

        return host.worker.submit(run)

    async def compute_logprobs_async(self, prompt: types.ModelInput, prompt_logprobs_last_n: int | None = None) -> list[float | None]:
        return await self.compute_logprobs(prompt, prompt_logprobs_last_n).result_async()

    def get_tokenizer(self) -> Any:
        return self._host.tokenizer

    def get_base_model(self) -> str:
        return self._base_model

    async def get_base_model_async(self) -> str:
        return self._base_model


def _release(host: Any, adapter: str) -> None:
    try:
        host.worker.submit(lambda: host.release_adapter(adapter))
    except Exception:  # noqa: BLE001 - interpreter shutdown
        pass


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


def run_sample_batch(host: Any, batch: list[tuple[SampleRequest, Any]]) -> None:
    """Generate every sample of every queued request, grouped by adapter, in batches."""
    import torch

    from tinkerplug_local.generate import Row, generate

    by_adapter: dict[str | None, list[tuple[SampleRequest, Any]]] = {}
    for request, future in batch:
        if future.set_running_or_notify_cancel():
            by_adapter.setdefault(request.adapter, []).append((request, future))
    pad_id = host.tokenizer.pad_token_id or 0
    for adapter, items in by_adapter.items():
        try:
            model = host.model_for(adapter)
            rows_of: list[list[Row]] = []
            all_rows: list[Row] = []
            for request, _ in items:
                stop_ids, stop_strings = _stops(request.params, host)
                rows = []
                for k in range(request.num_samples):
                    generator = None
                    if request.params.seed is not None:
                        generator = torch.Generator().manual_seed(request.params.seed + k)
                    rows.append(
                        Row(
                            prompt=request.prompt,
                            max_tokens=request.params.max_tokens or 128,
                            temperature=request.params.temperature,
                            top_k=request.params.top_k,
                            top_p=request.params.top_p,
                            stop_ids=stop_ids,
                            stop_strings=stop_strings,
                            generator=generator,
                        )
                    )
                rows_of.append(rows)
                all_rows.extend(rows)
            # Similar lengths together: less padding per batch.
            ordered = sorted(all_rows, key=lambda r: len(r.prompt))
            for start in range(0, len(ordered), MAX_BATCH_ROWS):
                generate(model, ordered[start : start + MAX_BATCH_ROWS], pad_id, host.tokenizer, host.device)
        except BaseException as exc:  # noqa: BLE001 - each caller gets the error
            for _, future in items:
                future.set_exception(exc)
            continue
        for (request, future), rows in zip(items, rows_of):
            sequences = [
                types.SampledSequence(
                    stop_reason=row.stop_reason,
                    sequence_id=uuid.uuid4().hex,
                    _tokens_list=row.tokens,
                    _logprobs_list=row.logprobs,
                )
                for row in rows
            ]
            try:
                future.set_result(_response(model, host, request, sequences))
            except BaseException as exc:  # noqa: BLE001 - delivered to the caller
                future.set_exception(exc)


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
