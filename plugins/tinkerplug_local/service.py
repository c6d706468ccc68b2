"""``ServiceClient``: the local backend's entry point, with the methods of ``tinker.ServiceClient``."""

from __future__ import annotations

import json
import os
import threading
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tinker import types

from tinkerplug_local.worker import ClientFuture, completed
from tinkerplug_local.loading import pick_device, pick_dtype, resolve_model
from tinkerplug_local.store import CheckpointStore, read_state_meta, to_path

if TYPE_CHECKING:
    from tinkerplug_local.host import ModelHost
    from tinkerplug_local.training_client import TrainingClient

DEFAULT_ROOT_ENV = "TINKERPLUG_LOCAL_DIR"
DEVICE_ENV = "TINKERPLUG_LOCAL_DEVICE"
CHECKPOINTING_ENV = "TINKERPLUG_LOCAL_GRADIENT_CHECKPOINTING"
MICROBATCH_ENV = "TINKERPLUG_LOCAL_MICROBATCH_TOKENS"
LOCAL_SESSION = "local"  # the session id of LossHandles made in-process


class ServiceClient:
    """An in-process Tinker service: LoRA training and sampling on this machine's CPU or GPU.

    ``checkpoint_dir`` holds every ``save_state`` / ``save_weights_for_sampler`` (default
    ``$TINKERPLUG_LOCAL_DIR`` or ``~/.cache/tinkerplug/local``); returned paths are plain
    directories that this client accepts back (``local://`` in front is accepted too).
    ``device`` defaults to ``$TINKERPLUG_LOCAL_DEVICE`` or ``auto``. ``gradient_checkpointing``
    (default ``$TINKERPLUG_LOCAL_GRADIENT_CHECKPOINTING`` = 1, or off) recomputes each layer in
    backward: less memory for more time. ``microbatch_tokens`` caps the tokens run at once
    (default ``$TINKERPLUG_LOCAL_MICROBATCH_TOKENS``, or 0: chosen from the device's memory).
    ``max_adapters`` (default 0: no limit) keeps that many training adapters per base model in
    memory; the least recently used others wait on disk with their optimizer state, exactly.
    ``mixed_batches`` (default off) runs the requests of different lanes (``tinkerplug serve``'s
    API keys) that are queued together as one mixed-adapter batch (``mixed.py``), and then
    ``compute_threads`` (default 1; 0: 2 on a CPU with two cores or more, else 1) lets batches
    of different lanes run side by side (``worker.py``).
    ``base_url``, ``api_key``
    and the SDK's other arguments are accepted and ignored, so scripts written for the
    service run unchanged; no API key is needed.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        checkpoint_dir: str | Path | None = None,
        device: str | None = None,
        dtype: str = "auto",
        gradient_checkpointing: bool | None = None,
        microbatch_tokens: int | None = None,
        max_adapters: int = 0,
        mixed_batches: bool = False,
        compute_threads: int = 1,
        **sdk_kwargs: Any,
    ):
        from tinkerplug_local.forward import ForwardOptions

        root = checkpoint_dir or os.environ.get(DEFAULT_ROOT_ENV) or Path.home() / ".cache" / "tinkerplug" / "local"
        self.store = CheckpointStore(Path(root).expanduser().resolve())
        self.device = pick_device(device or os.environ.get(DEVICE_ENV) or "auto")
        self.dtype = pick_dtype(dtype, self.device)
        if gradient_checkpointing is None:
            gradient_checkpointing = os.environ.get(CHECKPOINTING_ENV, "") not in ("", "0", "false")
        if microbatch_tokens is None:
            microbatch_tokens = int(os.environ.get(MICROBATCH_ENV) or 0)
        if microbatch_tokens < 0:
            raise ValueError(f"microbatch_tokens must be >= 0 (0: from the device's memory), got {microbatch_tokens}")
        self.forward_options = ForwardOptions(bool(gradient_checkpointing), int(microbatch_tokens))
        if max_adapters < 0:
            raise ValueError(f"max_adapters must be >= 0 (0: no limit), got {max_adapters}")
        self.max_adapters = max_adapters  # training adapters in memory per base model; the rest on disk
        self.mixed_batches = bool(mixed_batches)
        if compute_threads < 0:
            raise ValueError(f"compute_threads must be >= 0 (0: chosen for the device), got {compute_threads}")
        if compute_threads == 0:  # GPU kernels queue on one stream anyway; CPU cores sit idle otherwise
            compute_threads = 2 if self.device == "cpu" and (os.cpu_count() or 1) >= 2 else 1
        self.compute_threads = compute_threads
        self._hosts: dict[str, Any] = {}
        self._lock = threading.Lock()
        from tinkerplug_local.stability import StabilityStore

        self.stability = StabilityStore()  # what samplers with record_stability_info=True recorded
        from tinkerplug_local.uploaded import UploadedLosses

        self.uploaded_losses = UploadedLosses()  # create_custom_loss graphs, by loss_id

    def __enter__(self) -> "ServiceClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self, status: str = "success", detail: str | None = None) -> Any:
        """Stop the workers (after the jobs already submitted). A finished future, as in the SDK."""
        for host in self._hosts.values():
            host.worker.close()
        return completed(None)

    def hosts(self) -> list[ModelHost]:
        """The loaded base models, one worker each (no lock: a load holds it for seconds)."""
        return list(self._hosts.values())

    def _host(self, base_model: str) -> ModelHost:
        from tinkerplug_local.host import ModelHost

        source = resolve_model(base_model)
        with self._lock:  # one loaded copy of each base model per client
            if source.location not in self._hosts:
                self._hosts[source.location] = ModelHost(
                    source, self.device, self.dtype, self.forward_options, self.max_adapters, self.store.root,
                    self.mixed_batches, self.compute_threads)
            return self._hosts[source.location]

    # -- training clients --------------------------------------------------------------------

    def create_lora_training_client(
        self,
        base_model: str,
        rank: int = 32,
        seed: int | None = None,
        train_mlp: bool = True,
        train_attn: bool = True,
        train_unembed: bool = True,
        user_metadata: dict[str, str] | None = None,
        optimizer: Any = None,
    ) -> ClientFuture:
        if rank <= 0:
            raise ValueError(f"rank must be positive, got {rank}")
        if optimizer is not None and not isinstance(optimizer, types.AdamOptimizerConfig):
            raise NotImplementedError(f"the local backend implements Adam only, not {type(optimizer).__name__}")
        host = self._host(base_model)
        meta = dict(
            base_model=base_model, rank=rank, seed=seed, train_mlp=train_mlp, train_attn=train_attn,
            train_unembed=train_unembed, user_metadata=dict(user_metadata or {}),
        )
        return host.worker.submit(lambda: self._new_training_client(host, meta), wrapper=ClientFuture)

    def _new_training_client(self, host: ModelHost, meta: dict[str, Any]) -> TrainingClient:
        """Runs on the worker: a fresh LoRA adapter and the client that trains it."""
        from tinkerplug_local.training_client import TrainingClient

        targets = host.target_modules(meta["train_mlp"], meta["train_attn"], meta["train_unembed"])
        adapter = host.new_adapter(meta["rank"], targets, meta["seed"])
        client = TrainingClient(self, host, adapter, self.store.new_model_id(), meta)
        host.residency.touch(client)  # counted from now; the least recent other may go to disk
        return client

    def create_training_client_from_state(
        self,
        path: str,
        base_model: str | None = None,
        user_metadata: dict[str, str] | None = None,
        weights_access_token: str | None = None,
        optimizer: Any = None,
    ) -> ClientFuture:
        """A new training client with the weights of ``save_state`` checkpoint ``path`` and a
        fresh optimizer."""
        return self._from_state(path, with_optimizer=False, base_model=base_model, user_metadata=user_metadata)

    def create_training_client_from_state_with_optimizer(
        self,
        path: str,
        base_model: str | None = None,
        user_metadata: dict[str, str] | None = None,
        weights_access_token: str | None = None,
    ) -> ClientFuture:
        """Like ``create_training_client_from_state``, and Adam's moments restored too: the
        run continues exactly where the checkpoint left it."""
        return self._from_state(path, with_optimizer=True, base_model=base_model, user_metadata=user_metadata)

    def _from_state(self, path: str, with_optimizer: bool, base_model: str | None, user_metadata: dict[str, str] | None) -> ClientFuture:
        meta = read_state_meta(_local_path(path))
        if base_model:
            meta["base_model"] = base_model
        if user_metadata is not None:
            meta["user_metadata"] = dict(user_metadata)
        host = self._host(meta["base_model"])

        def create() -> Any:
            client = self._new_training_client(host, meta)
            client._load(path, with_optimizer=with_optimizer)
            return client

        return host.worker.submit(create, wrapper=ClientFuture)

    # -- sampling ----------------------------------------------------------------------------

    def create_sampling_client(
        self,
        model_path: str | None = None,
        base_model: str | None = None,
        retry_config: Any = None,
        record_stability_info: bool = False,
    ) -> ClientFuture:
        """A sampling client of ``save_weights_for_sampler`` weights (``model_path``) or of the
        plain ``base_model``."""
        from tinkerplug_local.sampling import SamplingClient

        if model_path is None:
            if base_model is None:
                raise ValueError("create_sampling_client needs model_path or base_model")
            host = self._host(base_model)
            client = SamplingClient(host, None, base_model, None).recording(self.stability, record_stability_info)
            return ClientFuture(completed(client).future())
        directory = to_path(_local_path(str(model_path)))
        config_file = directory / "adapter_config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"{model_path} is not sampler weights (no adapter_config.json)")
        host = self._host(json.loads(config_file.read_text())["base_model_name_or_path"])
        stability = self.stability
        return host.worker.submit(
            lambda: SamplingClient.from_saved(host, str(model_path)).recording(stability, record_stability_info),
            wrapper=ClientFuture,
        )

    # -- custom losses ---------------------------------------------------------------------

    def create_custom_loss(self, fn: Any, input_ranks: Any) -> ClientFuture:
        """The SDK's ``create_custom_loss``: ``fn`` traced and checked by the SDK, then its graph
        encoded as it would be uploaded and rebuilt here from the whitelist (``loss_graph.py``),
        so it runs in one pass exactly as ``serve`` runs it."""
        import dataclasses

        from tinker.lib.public_interfaces.custom_loss import encode_graph, trace_loss

        handle = trace_loss(fn, input_ranks, LOCAL_SESSION)
        loss_id = f"{LOCAL_SESSION}:loss:{uuid.uuid4().hex[:12]}"
        self.uploaded_losses.create(None, loss_id, handle.name, list(handle.inputs), encode_graph(handle).nodes)
        return ClientFuture(completed(dataclasses.replace(handle, loss_id=loss_id)).future())

    # -- info --------------------------------------------------------------------------------

    def get_server_capabilities(self) -> types.GetServerCapabilitiesResponse:
        """The shipped models (``tiny-chat``); any local Hugging Face model dir works too."""
        from tinkerplug.models import shipped_models

        return types.GetServerCapabilitiesResponse(
            supported_models=[
                types.SupportedModel(model_name=name, trainable=True, sampleable=True)
                for name in shipped_models()
            ]
        )

    async def get_server_capabilities_async(self) -> types.GetServerCapabilitiesResponse:
        return self.get_server_capabilities()

    def create_rest_client(self) -> Any:
        """Run lookups and checkpoint deletion for this client's checkpoints (see ``rest.py``)."""
        from tinkerplug_local.rest import RestClient

        return RestClient(self.store.root)

    def get_telemetry(self) -> None:
        return None  # nothing leaves this machine

    # Deprecated SDK variants: they return the client itself.
    async def create_lora_training_client_async(
        self,
        base_model: str,
        rank: int = 32,
        seed: int | None = None,
        train_mlp: bool = True,
        train_attn: bool = True,
        train_unembed: bool = True,
        user_metadata: dict[str, str] | None = None,
        optimizer: Any = None,
    ) -> Any:
        return await self.create_lora_training_client(
            base_model, rank, seed, train_mlp, train_attn, train_unembed, user_metadata, optimizer
        ).result_async()

    async def create_training_client_from_state_async(
        self,
        path: str,
        base_model: str | None = None,
        user_metadata: dict[str, str] | None = None,
        weights_access_token: str | None = None,
        optimizer: Any = None,
    ) -> Any:
        return await self.create_training_client_from_state(path, base_model, user_metadata).result_async()

    async def create_training_client_from_state_with_optimizer_async(
        self,
        path: str,
        base_model: str | None = None,
        user_metadata: dict[str, str] | None = None,
        weights_access_token: str | None = None,
    ) -> Any:
        return await self.create_training_client_from_state_with_optimizer(path, base_model, user_metadata).result_async()

    async def create_sampling_client_async(
        self,
        model_path: str | None = None,
        base_model: str | None = None,
        retry_config: Any = None,
        record_stability_info: bool = False,
    ) -> Any:
        return await self.create_sampling_client(model_path, base_model, record_stability_info=record_stability_info).result_async()


def _local_path(path: str) -> str:
    if path.startswith("tinker://"):
        raise ValueError(
            f"{path} is a checkpoint on the Tinker service; the local backend reads local checkpoints "
            "(the directories its save_state / save_weights_for_sampler return, or local://DIR)"
        )
    return path
