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
        if not 1 <= num_samples <= MAX_SAMPLES:
            raise ValueError(f"num_samples must be between 1 and {MAX_SAMPLES} (a larger group is several requests)")
        tokens = prompt.to_ints()
        check_prompt(self._host, tokens)
        check_params(self._host, len(tokens), sampling_params)
        if topk_prompt_logprobs < 0 or (prompt_logprobs_last_n is not None and prompt_logprobs_last_n < 0):
            raise ValueError("topk_prompt_logprobs and prompt_logprobs_last_n must be >= 0")
        if sequence_ids is not None and len(sequence_ids) != num_samples:
            raise ValueError(f"{len(sequence_ids)} sequence_ids for {num_samples} samples")
        record = self._record if record_stability_info is None else record_stability_info
        request = SampleRequest(
            self._adapter, tokens, num_samples, sampling_params, include_prompt_logprobs,
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
        check_prompt(self._host, prompt.to_ints())
        return self._host.submit_sample(LogprobsRequest(self._adapter, prompt.to_ints(), prompt_logprobs_last_n))

    async def compute_logprobs_async(self, prompt: types.ModelInput, prompt_logprobs_last_n: int | None = None) -> list[float | None]:
        return await self.compute_logprobs(prompt, prompt_logprobs_last_n).result_async()

    def get_tokenizer(self) -> Any:
        return self._host.tokenizer

    def context_length(self) -> int | None:
        """The most tokens a prompt and its answer hold together (None: the model names none)."""
        return _context(self._host)

    def get_base_model(self) -> str:
        return self._base_model

    async def get_base_model_async(self) -> str:
        return self._base_model


MAX_SAMPLES = 256  # per request: the cookbook's groups are 4 to 64; more is several requests
MAX_SEED = 2**63  # torch.Generator().manual_seed takes less than 2**64; sample k is seeded seed + k


def check_prompt(host: Any, tokens: list[int]) -> None:
    """A prompt the model can run: checked when a request is submitted, because requests of
    several clients share a batch and one bad token id would fail all of them."""
    if not tokens:
        raise ValueError("the prompt is empty: it needs at least one token")
    low, high = min(tokens), max(tokens)
    if low < 0 or high >= host.vocab_size:
        raise ValueError(f"prompt token {low if low < 0 else high} is outside the model's vocabulary (0 to {host.vocab_size - 1})")


def check_params(host: Any, prompt_length: int, params: types.SamplingParams) -> None:
    """``max_tokens`` that fits the model's context after the prompt, and a seed torch takes."""
    context = _context(host)
    max_tokens = params.max_tokens
    if max_tokens is not None and (max_tokens < 0 or (context and prompt_length + max_tokens > context)):
        raise ValueError(f"max_tokens {max_tokens} with a prompt of {prompt_length} tokens does not fit the model's "
                         f"context of {context} tokens: ask for at most {max(0, (context or 0) - prompt_length)}")
    if params.seed is not None and not -MAX_SEED <= params.seed < MAX_SEED - MAX_SAMPLES:
        raise ValueError(f"seed must be between {-MAX_SEED} and {MAX_SEED - MAX_SAMPLES - 1}")


def _context(host: Any) -> int | None:
    return getattr(host.model.config, "max_position_embeddings", None)


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
