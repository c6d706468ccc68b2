"""``ServiceClient``: the local backend's entry point, with the methods of ``tinker.ServiceClient``."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from tinker import types

from tinkerplug_local.futures import ClientFuture, completed
from tinkerplug_local.loading import pick_device, pick_dtype, resolve_model
from tinkerplug_local.store import CheckpointStore, read_state_meta, to_path

DEFAULT_ROOT_ENV = "TINKERPLUG_LOCAL_DIR"


class ServiceClient:
    """An in-process Tinker service: LoRA training and sampling on this machine's CPU or GPU.

    ``checkpoint_dir`` holds every ``save_state`` / ``save_weights_for_sampler`` (default
    ``$TINKERPLUG_LOCAL_DIR`` or ``~/.cache/tinkerplug/local``); returned paths are plain
    directories that this client accepts back. ``base_url``, ``api_key`` and other SDK
    arguments are accepted and ignored, so scripts written for the service run unchanged.
    """

    def __init__(
        self,
        base_url: str | None = None,
        api_key: str | None = None,
        *,
        checkpoint_dir: str | Path | None = None,
        device: str = "auto",
        dtype: str = "auto",
        **sdk_kwargs: Any,
    ):
        root = checkpoint_dir or os.environ.get(DEFAULT_ROOT_ENV) or Path.home() / ".cache" / "tinkerplug" / "local"
        self.store = CheckpointStore(Path(root).expanduser().resolve())
        self.device = pick_device(device)
        self.dtype = pick_dtype(dtype, self.device)
        self._hosts: dict[str, Any] = {}
        self._lock = threading.Lock()

    def __enter__(self) -> "ServiceClient":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        for host in self._hosts.values():
            host.worker.close()

    def _host(self, base_model: str) -> Any:
        from tinkerplug_local.host import ModelHost

        source = resolve_model(base_model)
        with self._lock:  # one loaded copy of each base model per client
            if source.location not in self._hosts:
                self._hosts[source.location] = ModelHost(source, self.device, self.dtype)
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
        host = self._host(base_model)
        meta = dict(base_model=base_model, rank=rank, seed=seed, train_mlp=train_mlp, train_attn=train_attn, train_unembed=train_unembed)
        return host.worker.submit(lambda: self._new_training_client(host, meta), wrapper=ClientFuture)

    def _new_training_client(self, host: Any, meta: dict[str, Any]) -> Any:
        """Runs on the worker: a fresh LoRA adapter and the client that trains it."""
        from tinkerplug_local.training import TrainingClient

        targets = host.target_modules(meta["train_mlp"], meta["train_attn"], meta["train_unembed"])
        adapter = host.new_adapter(meta["rank"], targets, meta["seed"])
        return TrainingClient(self, host, adapter, self.store.new_model_id(), meta)

    def create_training_client_from_state(self, path: str, base_model: str | None = None, **kwargs: Any) -> ClientFuture:
        return self._from_state(path, with_optimizer=False, base_model=base_model)

    def create_training_client_from_state_with_optimizer(self, path: str, base_model: str | None = None, **kwargs: Any) -> ClientFuture:
        return self._from_state(path, with_optimizer=True, base_model=base_model)

    def _from_state(self, path: str, with_optimizer: bool, base_model: str | None) -> ClientFuture:
        meta = read_state_meta(path)
        if base_model:
            meta["base_model"] = base_model
        host = self._host(meta["base_model"])

        def create() -> Any:
            client = self._new_training_client(host, meta)
            client._load(path, with_optimizer=with_optimizer)
            return client

        return host.worker.submit(create, wrapper=ClientFuture)

    # -- sampling ----------------------------------------------------------------------------

    def create_sampling_client(self, model_path: str | None = None, base_model: str | None = None, retry_config: Any = None, **kwargs: Any) -> ClientFuture:
        from tinkerplug_local.sampling import SamplingClient

        if model_path is None:
            if base_model is None:
                raise ValueError("create_sampling_client needs model_path or base_model")
            host = self._host(base_model)
            return ClientFuture(completed(SamplingClient(host, None, base_model, None)).future())
        directory = to_path(str(model_path))
        config_file = directory / "adapter_config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"{model_path} is not sampler weights (no adapter_config.json)")
        host = self._host(json.loads(config_file.read_text())["base_model_name_or_path"])
        return host.worker.submit(lambda: self._sampler_on_worker(host, str(model_path)), wrapper=ClientFuture)

    def _sampler_on_worker(self, host: Any, model_path: str) -> Any:
        """Runs on the worker: read the saved adapter back from disk as a frozen snapshot."""
        from tinkerplug_local.sampling import SamplingClient

        adapter = host.load_frozen_adapter(str(to_path(model_path)))
        return SamplingClient(host, adapter, host.source.name, model_path)

    # -- info --------------------------------------------------------------------------------

    def get_server_capabilities(self) -> types.GetServerCapabilitiesResponse:
        from tinkerplug.models import shipped_models

        return types.GetServerCapabilitiesResponse(
            supported_models=[
                types.SupportedModel(model_name=name, trainable=True, sampleable=True)
                for name in shipped_models()
            ]
        )

    async def get_server_capabilities_async(self) -> types.GetServerCapabilitiesResponse:
        return self.get_server_capabilities()

    # Deprecated SDK variants.
    async def create_lora_training_client_async(self, *args: Any, **kwargs: Any) -> Any:
        return await self.create_lora_training_client(*args, **kwargs).result_async()

    async def create_training_client_from_state_async(self, *args: Any, **kwargs: Any) -> Any:
        return await self.create_training_client_from_state(*args, **kwargs).result_async()

    async def create_training_client_from_state_with_optimizer_async(self, *args: Any, **kwargs: Any) -> Any:
        return await self.create_training_client_from_state_with_optimizer(*args, **kwargs).result_async()

    async def create_sampling_client_async(self, *args: Any, **kwargs: Any) -> Any:
        return await self.create_sampling_client(*args, **kwargs).result_async()
