"""The local ``TrainingClient``: the SDK's methods and types, run in order on the host's worker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

from tinker import types

from tinkerplug_local.losses import check_datums, check_loss_fn, datum_inputs, resolve_config
from tinkerplug_local.store import OPTIMIZER_FILE, STATE_META, to_path, write_adapter

if TYPE_CHECKING:
    from tinkerplug_local.host import ModelHost
    from tinkerplug_local.service import ServiceClient


class TrainingClient:
    def __init__(self, service: ServiceClient, host: ModelHost, adapter: str, model_id: str, meta: dict[str, Any]):
        self._service = service
        self._host = host
        self._adapter = adapter
        self.model_id = model_id
        self._meta = meta  # base_model, rank, seed, train_* flags
        self._optimizer: Any = None
        self._param_list: list[Any] | None = None
        self._offloaded: str | None = None  # the file of its adapter while it is out of memory (residency.py)
        self.session: str | None = None  # the serve session that owns this model (None in-process)
        self.lane: str | None = None  # the worker lane of its jobs: serve gives each API key one (fair turns)

    def _job(self, fn: Any, wrapper: Any = None, batch: Any = None, shared: bool = False) -> Any:
        """Queue ``fn`` on the worker, with this client's adapter in memory when it runs
        (``--max-adapters``); ``batch``: how it may run with other clients' requests, ``shared``:
        whether it may run beside them (it touches only this client's adapter; worker.py)."""
        def run() -> Any:
            self._host.residency.touch(self)
            return fn()

        if wrapper is not None:
            return self._host.worker.submit(run, wrapper, lane=self.lane, batch=batch, shared=shared)
        return self._host.worker.submit(run, lane=self.lane, batch=batch, shared=shared)

    def release(self) -> None:
        """Free this client's adapter (or its offloaded file) on the host, after the jobs already
        queued on its worker (the server does this when the client's session ends)."""
        host = self._host
        host.worker.submit(lambda: host.residency.drop(self), lane=self.lane)

    # -- training ----------------------------------------------------------------------------

    def forward(self, data: list[types.Datum], loss_fn: str, loss_fn_config: Mapping[str, Any] | None = None) -> Any:
        if loss_fn == "custom":
            return self._uploaded(data, loss_fn_config, backward=False)
        return self._train_job(data, self._loss_of_datum(data, loss_fn, loss_fn_config), backward=False)

    def forward_backward(
        self, data: list[types.Datum], loss_fn: str, loss_fn_config: Mapping[str, Any] | None = None
    ) -> Any:
        if loss_fn == "custom":
            return self._uploaded(data, loss_fn_config, backward=True)
        return self._train_job(data, self._loss_of_datum(data, loss_fn, loss_fn_config), backward=True)

    def _train_job(self, data: list[types.Datum], loss_of: Any, backward: bool) -> Any:
        """A built-in loss: mergeable with other clients' requests of the same kind (merged_training.py)."""
        from tinkerplug_local.merged_training import TrainJob, merge_key, run_jobs
        from tinkerplug_local.worker import Batchable

        def solo() -> Any:
            return self._run_forward(data, loss_of, backward)

        job = TrainJob(self, data, loss_of, backward, solo)
        return self._job(solo, batch=Batchable(merge_key(self, backward), job, run_jobs), shared=True)

    def _uploaded(self, data: list[types.Datum], loss_fn_config: Mapping[str, Any] | None, backward: bool) -> Any:
        """A loss made with ``create_custom_loss``, named by ``loss_fn_config["loss_id"]``."""
        from tinkerplug_local.uploaded import check_uploaded_request, run_uploaded

        config = dict(loss_fn_config or {})
        if set(config) != {"loss_id"}:
            raise ValueError(f"loss_fn 'custom' takes loss_fn_config {{'loss_id': ...}} only, got keys {sorted(config)}")
        graph = self._service.uploaded_losses.get(config["loss_id"], self.session)
        check_uploaded_request(graph, data, self._host.vocab_size)
        return self._job(lambda: run_uploaded(self, data, graph, backward))

    def forward_backward_custom(self, data: list[types.Datum], loss_fn: Any, *, loss_type_input: Any = None) -> Any:
        """The SDK's custom loss, in one forward pass where the SDK makes two (see ``custom.py``)."""
        from tinkerplug_local.custom import check_custom_request, run_custom

        if getattr(loss_fn, "loss_id", None) is not None:  # uploaded: one forward_backward, on the worker
            return self.forward_backward(data, "custom", {"loss_id": loss_fn.loss_id})
        loss_fn = check_custom_request(data, loss_fn, loss_type_input, self._host.vocab_size)
        return self._job(lambda: run_custom(self, data, loss_fn))

    async def forward_backward_custom_async(self, data: list[types.Datum], loss_fn: Any, *, loss_type_input: Any = None) -> Any:
        return self.forward_backward_custom(data, loss_fn, loss_type_input=loss_type_input)

    def optim_step(self, optim_params: types.AdamParams | None = None, *, adam_params: types.AdamParams | None = None) -> Any:
        params = optim_params or adam_params or types.AdamParams()
        if not isinstance(params, types.AdamParams):
            raise NotImplementedError("the local backend implements the Adam optimizer only")
        return self._job(lambda: self._run_optim(params), shared=True)

    def _loss_of_datum(self, data: list[types.Datum], loss_fn: str, loss_fn_config: Mapping[str, Any] | None) -> Any:
        """Check the request now (not later on the worker); return ``loss_of(index, logprobs)``."""
        spec = check_loss_fn(loss_fn)
        config = resolve_config(loss_fn, spec, loss_fn_config)
        check_datums(loss_fn, spec, data, self._host.vocab_size)
        extra = _stability_inputs(self._service.stability, self.session, data) if loss_fn == "stable_reinforce" else None

        def loss_of(index: int, logprobs: Any) -> Any:
            inputs = datum_inputs(spec, data[index], logprobs.device)
            if extra is not None:
                inputs.update({k: v.to(logprobs.device) for k, v in extra[index].items()})
            return spec.fn(logprobs, inputs, config)

        return loss_of

    def _logprobs(self, data: list[types.Datum], grad: bool) -> Any:
        """``forward.microbatch_logprobs`` over ``data``: per-datum target logprobs, a microbatch at a time."""
        from tinkerplug_local.forward import microbatch_logprobs

        tokens = [d.model_input.to_ints() for d in data]
        targets = [d.loss_fn_inputs["target_tokens"].to_torch().long() for d in data]  # (T,) or (T, K)
        model = self._host.model_for(self._adapter)
        pad = self._host.tokenizer.pad_token_id or 0
        options = self._host.forward_options
        return microbatch_logprobs(model, tokens, targets, self._host.device, pad, grad=grad, options=options)

    def _run_forward(self, data: list[types.Datum], loss_of: Any, backward: bool) -> types.ForwardBackwardOutput:
        import torch

        outputs: list[Any] = [None] * len(data)
        total = 0.0
        for batch in self._logprobs(data, grad=backward):
            with torch.set_grad_enabled(backward):
                loss = sum(loss_of(i, lp) for i, lp in zip(batch.indices, batch.logprobs))
                if backward:
                    loss.backward()  # gradients accumulate until optim_step, as on the service
            total += float(loss.detach())
            for i, lp in zip(batch.indices, batch.logprobs):
                outputs[i] = {"logprobs": types.TensorData.from_torch(lp.detach().cpu())}
        return _output(outputs, {"loss:sum": total})

    def _params(self) -> list[Any]:
        # Looked up once: walking every module's parameters costs ~4 ms a step on tiny models,
        # and an adapter's tensors stay the same objects for its lifetime (loads copy in place).
        if self._param_list is None:
            self._param_list = [p for _, p in self._host.adapter_params(self._adapter)]
        return self._param_list

    def _make_optimizer(self) -> Any:
        import torch

        # foreach: one C++ loop over the adapter's tensors instead of Python's, bit-identical to
        # the per-tensor step on CPU (checked on 50 steps) and ~35 % cheaper on tiny adapters.
        return torch.optim.AdamW(self._params(), lr=1e-4, foreach=True)

    def _run_optim(self, adam: types.AdamParams) -> types.OptimStepResponse:
        import torch

        # No activate(): the step works on this adapter's tensors directly, and switching PEFT's
        # active adapter walks every module (~20 % of a 4-client server's worker time, 2026-12-06).
        if self._optimizer is None:
            self._optimizer = self._make_optimizer()
        for group in self._optimizer.param_groups:
            group.update(lr=adam.learning_rate, betas=(adam.beta1, adam.beta2), eps=adam.eps, weight_decay=adam.weight_decay)
        params = self._params()
        # clip_grad_norm_ in two halves: without clipping its scale factor is exactly 1, so the
        # multiply of every gradient is skipped (bit-identical, ~1 ms a step on tiny models).
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None], foreach=True)
        if adam.grad_clip_norm > 0:
            torch.nn.utils.clip_grads_with_norm_(params, adam.grad_clip_norm, grad_norm, foreach=True)
        self._optimizer.step()
        self._optimizer.zero_grad(set_to_none=True)
        return types.OptimStepResponse(metrics={"grad_norm": float(grad_norm)})

    # -- checkpoints -------------------------------------------------------------------------

    def save_state(self, name: str, ttl_seconds: int | None = None, overwrite: bool = False, user_metadata: Any = None) -> Any:
        def run() -> types.SaveWeightsResponse:
            import torch

            def fill(tmp: Path) -> None:
                write_adapter(tmp, self._host.peft, self._adapter, self._host.source.location)
                optimizer = self._optimizer.state_dict() if self._optimizer is not None else None
                torch.save(optimizer, tmp / OPTIMIZER_FILE)
                (tmp / STATE_META).write_text(json.dumps(self._meta, indent=2) + "\n")

            path = self._service.store.write(self.model_id, "weights", name, fill)
            return types.SaveWeightsResponse(path=path)

        return self._job(run)

    def save_weights_for_sampler(self, name: str, ttl_seconds: int | None = None, user_metadata: Any = None) -> Any:
        def run() -> types.SaveWeightsForSamplerResponse:
            def fill(tmp: Path) -> None:
                write_adapter(tmp, self._host.peft, self._adapter, self._host.source.location)

            path = self._service.store.write(self.model_id, "sampler_weights", name, fill)
            return types.SaveWeightsForSamplerResponse(path=path)

        return self._job(run)

    def load_state(self, path: str, weights_access_token: str | None = None) -> Any:
        return self._job(lambda: self._load(path, with_optimizer=False))

    def load_state_with_optimizer(self, path: str, weights_access_token: str | None = None) -> Any:
        return self._job(lambda: self._load(path, with_optimizer=True))

    def _load(self, path: str, with_optimizer: bool) -> types.LoadWeightsResponse:
        """Read adapter weights (and optimizer state) from a ``save_state`` dir, exactly."""
        import torch
        from peft.utils import set_peft_model_state_dict
        from safetensors.torch import load_file

        directory = to_path(path)
        weights = load_file(str(directory / "adapter_model.safetensors"), device=self._host.device)
        self._host.activate(self._adapter)
        result = set_peft_model_state_dict(self._host.peft, weights, adapter_name=self._adapter)
        if getattr(result, "unexpected_keys", None):
            raise ValueError(f"{path}: weights do not fit this model ({result.unexpected_keys[:3]} ...)")
        self._optimizer = None
        if with_optimizer:
            state = torch.load(directory / OPTIMIZER_FILE, map_location=self._host.device, weights_only=True)
            if state is not None:
                self._optimizer = self._make_optimizer()
                self._optimizer.load_state_dict(state)
        return types.LoadWeightsResponse(path=path)

    # -- sampling and info ------------------------------------------------------------------

    def save_weights_and_get_sampling_client(
        self, name: str | None = None, retry_config: Any = None, record_stability_info: bool = False, kind: str = "snapshot"
    ) -> Any:
        """A sampler of the weights as they are once the requests before this one have run: a
        frozen in-memory snapshot (training on does not change it). With ``name`` the weights are
        also saved for the sampler on disk, and the client's ``model_path`` is that dir."""
        from tinkerplug_local.worker import ClientFuture
        from tinkerplug_local.sampling import SamplingClient

        if kind != "snapshot":
            raise NotImplementedError(f"the local backend supports kind='snapshot' only, not {kind!r}")
        saved = self.save_weights_for_sampler(name) if name else None
        # Jobs run in order: by the time this one runs, the save above has finished.
        stability = self._service.stability

        def snapshot() -> Any:
            client = SamplingClient.from_snapshot(self._host, self._adapter, saved.result().path if saved else None)
            return client.recording(stability, record_stability_info, self.session)

        # A snapshot only copies this adapter's tensors, so it may run beside other keys' batches
        # (without a name: saving to disk waits for nothing to run, as every checkpoint does).
        return self._job(snapshot, wrapper=ClientFuture, shared=not name)

    def create_sampling_client(self, model_path: str, retry_config: Any = None, record_stability_info: bool = False) -> Any:
        return self._service.create_sampling_client(model_path=model_path, record_stability_info=record_stability_info)

    def get_tokenizer(self) -> Any:
        return self._host.tokenizer

    def get_info(self) -> types.GetInfoResponse:
        config = self._host.model.config
        return types.GetInfoResponse(
            model_data=types.ModelData(
                arch=(config.architectures or [config.model_type])[0],
                model_name=self._meta["base_model"],
                tokenizer_id=self._meta["base_model"],
            ),
            model_id=self.model_id,
            is_lora=True,
            lora_rank=self._meta["rank"],
            model_name=self._meta["base_model"],
        )

    # Deprecated SDK variants the cookbook still calls: they return the future, awaitable.
    async def forward_async(self, data: list[types.Datum], loss_fn: str, loss_fn_config: Mapping[str, Any] | None = None) -> Any:
        return self.forward(data, loss_fn, loss_fn_config)

    async def forward_backward_async(
        self, data: list[types.Datum], loss_fn: str, loss_fn_config: Mapping[str, Any] | None = None
    ) -> Any:
        return self.forward_backward(data, loss_fn, loss_fn_config)

    async def optim_step_async(
        self, optim_params: types.AdamParams | None = None, *, adam_params: types.AdamParams | None = None
    ) -> Any:
        return self.optim_step(optim_params, adam_params=adam_params)

    async def save_state_async(
        self, name: str, ttl_seconds: int | None = None, overwrite: bool = False, user_metadata: Any = None
    ) -> Any:
        return self.save_state(name, ttl_seconds, overwrite, user_metadata)

    async def load_state_async(self, path: str, weights_access_token: str | None = None) -> Any:
        return self.load_state(path)

    async def load_state_with_optimizer_async(self, path: str, weights_access_token: str | None = None) -> Any:
        return self.load_state_with_optimizer(path)

    async def save_weights_for_sampler_async(self, name: str, ttl_seconds: int | None = None, user_metadata: Any = None) -> Any:
        return self.save_weights_for_sampler(name, ttl_seconds, user_metadata)

    async def save_weights_and_get_sampling_client_async(
        self, name: str | None = None, retry_config: Any = None, record_stability_info: bool = False, kind: str = "snapshot"
    ) -> Any:
        return await self.save_weights_and_get_sampling_client(name, retry_config, record_stability_info, kind).result_async()

    async def create_sampling_client_async(self, model_path: str, retry_config: Any = None, record_stability_info: bool = False) -> Any:
        return await self.create_sampling_client(model_path, retry_config, record_stability_info).result_async()

    async def get_info_async(self) -> types.GetInfoResponse:
        return self.get_info()


def _output(outputs: list[Any], metrics: dict[str, float]) -> types.ForwardBackwardOutput:
    return types.ForwardBackwardOutput(loss_fn_output_type="TensorData", loss_fn_outputs=outputs, metrics=metrics)


def _stability_inputs(store: Any, owner: str | None, data: list[types.Datum]) -> list[dict[str, Any]]:
    """stable_reinforce's recorded sampler logprobs and sampled-target mask, per datum."""
    import torch

    from tinkerplug_local.stability import resolve_provenance

    return [
        {"sampler_logprobs": torch.from_numpy(r.sampler_logprobs), "sampled": torch.from_numpy(r.sampled)}
        for r in resolve_provenance(store, owner, data)
    ]
