"""The local ``SamplingClient``: frozen sampler weights (read back from disk, or an in-memory
snapshot) and what the SDK asks of them: samples, prompt logprobs. Generation runs in
``sample_batches.py``."""

from __future__ import annotations

import queue
import threading
import weakref
from typing import TYPE_CHECKING, Any

from tinker import types

from tinkerplug_local.sample_batches import LogprobsRequest, SampleRequest

if TYPE_CHECKING:
    from tinkerplug_local.host import ModelHost


class SamplingClient:
    """Samples from sampler weights saved by ``save_weights_for_sampler`` (a frozen copy read back
    from disk) or from the base model. Methods and return types follow ``tinker.SamplingClient``."""

    def __init__(self, host: ModelHost, adapter: str | None, base_model: str, model_path: str | None):
        self._host = host
        self._adapter = adapter
        self._base_model = base_model
        self.model_path = model_path
        self._stability: Any = None  # the service's StabilityStore
        self._record = False  # record_stability_info given when the client was made
        self.session: str | None = None  # the serve session that owns it (None in-process)
        if adapter is not None:  # free the adapter when the client goes away
            _start_releasing()
            # ... but not at interpreter exit: torch work on a daemon thread then aborts Python.
            weakref.finalize(self, _releases.put, (host, adapter)).atexit = False

    @classmethod
    def from_saved(cls, host: ModelHost, model_path: str) -> "SamplingClient":
        """Runs on the worker: sampler weights read back from a ``save_weights_for_sampler`` dir."""
        from tinkerplug_local.store import to_path

        return cls(host, host.load_frozen_adapter(str(to_path(model_path))), host.source.name, model_path)

    @classmethod
    def from_snapshot(cls, host: ModelHost, adapter: str, model_path: str | None) -> "SamplingClient":
        """Runs on the worker: a frozen in-memory copy of training adapter ``adapter`` as it is now."""
        return cls(host, host.snapshot_adapter(adapter), host.source.name, model_path)

    def recording(self, store: Any, record_stability_info: bool, session: str | None = None) -> "SamplingClient":
        """Attach the service's stability store; ``record_stability_info`` is every sample's default."""
        self._stability, self._record, self.session = store, bool(record_stability_info), session
        return self

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
        *,
        record_stability_info: bool | None = None,
        sequence_ids: list[str] | None = None,
    ) -> Any:
        """The SDK's ``sample``; ``serve`` also passes each request's ``record_stability_info``
        and the ``sequence_ids`` it promised the client when the request was submitted."""
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
        if sequence_ids is not None and len(sequence_ids) != num_samples:
            raise ValueError(f"{len(sequence_ids)} sequence_ids for {num_samples} samples")
        record = self._record if record_stability_info is None else record_stability_info
        request = SampleRequest(
            self._adapter, prompt.to_ints(), num_samples, sampling_params, include_prompt_logprobs,
            topk_prompt_logprobs, prompt_logprobs_last_n, sequence_ids,
            (self._stability, self.session) if record and self._stability is not None else None,
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
        """Queued with the samples: requests sent together share one forward."""
        return self._host.submit_sample(LogprobsRequest(self._adapter, prompt.to_ints(), prompt_logprobs_last_n))

    async def compute_logprobs_async(self, prompt: types.ModelInput, prompt_logprobs_last_n: int | None = None) -> list[float | None]:
        return await self.compute_logprobs(prompt, prompt_logprobs_last_n).result_async()

    def get_tokenizer(self) -> Any:
        return self._host.tokenizer

    def get_base_model(self) -> str:
        return self._base_model

    async def get_base_model_async(self) -> str:
        return self._base_model


# A finalizer runs wherever garbage collection does, possibly inside the worker's own queue
# code on the same thread (its lock is reentrant), so it must not submit there: it puts the
# adapter here (SimpleQueue.put is safe in finalizers) and a thread of its own submits it.
_releases: "queue.SimpleQueue[tuple[Any, str]]" = queue.SimpleQueue()
_releasing: list[threading.Thread] = []
_releasing_lock = threading.Lock()


def _start_releasing() -> None:
    with _releasing_lock:
        if not _releasing:
            _releasing.append(threading.Thread(target=_release_forever, name="tinkerplug-sampler-release", daemon=True))
            _releasing[0].start()


def _release_forever() -> None:
    while True:
        _release(*_releases.get())


def _release(host: Any, adapter: str) -> None:
    try:
        host.worker.submit(lambda: host.release_adapter(adapter))
    except Exception:  # noqa: BLE001 - a worker already closed
        pass
