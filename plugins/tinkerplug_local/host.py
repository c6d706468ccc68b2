"""One loaded base model with its LoRA adapters: a training adapter per training client and a
frozen adapter per sampler snapshot. Every method runs on the host's worker thread."""

from __future__ import annotations

import itertools
import threading
import warnings
from concurrent.futures import Future
from typing import Any

from tinker.lib.public_interfaces.api_future import AwaitableConcurrentFuture

from tinkerplug_local.sample_batches import run_sample_batch
from tinkerplug_local.worker import Worker
from tinkerplug_local.loading import ModelSource, load_model_and_tokenizer

LORA_ALPHA = 32  # fixed, as on the service: with alpha/r scaling the best LR barely depends on rank
SPARE_SNAPSHOTS = 2  # released sampler adapters kept for the next snapshots to copy into
MAX_MERGED_REQUESTS = 16  # requests of different lanes (keys) in one mixed-adapter batch at most


class ModelHost:
    def __init__(self, source: ModelSource, device: str, dtype: Any, forward_options: Any = None, max_adapters: int = 0,
                 offload_dir: Any = None, mixed_batches: bool = False):
        """``max_adapters``: training adapters kept in memory (0: all); the others wait in ``offload_dir``.
        ``mixed_batches``: requests of several clients (adapters) queued together run as one batch."""
        from pathlib import Path

        from tinkerplug_local.forward import ForwardOptions
        from tinkerplug_local.residency import Residency

        self.source = source
        self.device = device
        self.forward_options = forward_options or ForwardOptions()
        self.worker = Worker(f"tinkerplug-local:{source.name}")
        self.model, self.tokenizer = self.worker.submit(
            lambda: load_model_and_tokenizer(source, device, dtype)
        ).result()
        self._linear_groups = self._classify_linears()
        self.vocab_size: int = self.model.get_input_embeddings().num_embeddings  # token ids are checked against it
        self.peft: Any = None  # the PeftModel, once the first adapter exists
        self._names = itertools.count()
        self._pending_samples: list[tuple[Any, Future]] = []
        self._spares: list[str] = []  # sampler adapters whose clients are gone
        self._lock = threading.Lock()
        self.residency = Residency(self, max_adapters, Path(offload_dir or ".") / ".offload" / source.name)
        self.mixed_batches = mixed_batches
        self.worker.batch_most = MAX_MERGED_REQUESTS if mixed_batches else 1
        self.mixed_runs = self.mixed_requests = 0  # training batches of several adapters, and their requests
        self.mixed_samples = 0  # sample batches that held several adapters

    # -- adapters (worker thread) ------------------------------------------------------------

    def target_modules(self, train_mlp: bool, train_attn: bool, train_unembed: bool) -> list[str]:
        groups = {"mlp": train_mlp, "attn": train_attn, "unembed": train_unembed}
        targets = [name for name, group in self._linear_groups if groups[group]]
        if not targets:
            raise ValueError("no LoRA target modules: enable at least one of train_mlp, train_attn, train_unembed")
        return targets

    def _classify_linears(self) -> list[tuple[str, str]]:
        """(module name, group) of every LoRA-able linear layer, read before PEFT wraps them."""
        import torch

        unembed = self.model.get_output_embeddings()
        groups = []
        for name, module in self.model.named_modules():
            if not isinstance(module, torch.nn.Linear):
                continue
            if module is unembed:
                groups.append((name, "unembed"))
            elif any(p in name for p in ("attn", "attention")):
                groups.append((name, "attn"))
            elif any(p in name for p in ("mlp", "feed_forward", "ffn", "experts")):
                groups.append((name, "mlp"))
        return groups

    def new_adapter(self, rank: int, targets: list[str], seed: int | None) -> str:
        import torch
        from peft import LoraConfig, get_peft_model

        name = f"adapter{next(self._names)}"
        config = LoraConfig(r=rank, lora_alpha=LORA_ALPHA, target_modules=targets, lora_dropout=0.0)
        with torch.random.fork_rng(devices=[]):  # a seeded init must not disturb the global RNG
            if seed is not None:
                torch.manual_seed(seed)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if self.peft is None:
                    self.peft = get_peft_model(self.model, config, adapter_name=name)
                else:
                    self.peft.add_adapter(name, config)
        self.activate(name)
        return name

    def add_adapter_like(self, config: Any) -> str:
        """A new adapter with ``config`` (an offloaded one coming back: its tensors are copied in next)."""
        import torch

        name = f"adapter{next(self._names)}"
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings():  # its init must not disturb the global RNG
            warnings.simplefilter("ignore")
            self.peft.add_adapter(name, config)
        return name

    def load_frozen_adapter(self, path: str) -> str:
        from peft import PeftModel

        name = f"sampler{next(self._names)}"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if self.peft is None:
                self.peft = PeftModel.from_pretrained(self.model, path, adapter_name=name, is_trainable=False)
            else:
                self.peft.load_adapter(path, adapter_name=name, is_trainable=False)
        return name

    def snapshot_adapter(self, source: str) -> str:
        """A frozen in-memory copy of adapter ``source``: what it is now, whatever training does
        to ``source`` later. No disk round trip (an RL loop takes one every step), and a spare
        adapter of the same shape is reused: a copy then costs ~1 ms instead of ~40 ms."""
        import torch

        name = self._take_spare(source) or self._add_snapshot_adapter(source)
        copies = dict(self.adapter_params(name))
        with torch.no_grad():
            for param_name, tensor in self.adapter_params(source):
                copies[param_name.replace(f".{source}.", f".{name}.")].copy_(tensor)
        for tensor in copies.values():
            tensor.requires_grad_(False)
        return name

    def _add_snapshot_adapter(self, source: str) -> str:
        import copy

        name = f"sampler{next(self._names)}"
        config = copy.deepcopy(self.peft.peft_config[source])
        config.inference_mode = True
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.peft.add_adapter(name, config)
        return name

    def _take_spare(self, source: str) -> str | None:
        want = self.peft.peft_config[source]
        for name in self._spares:
            have = self.peft.peft_config[name]
            if (have.r, have.lora_alpha, set(have.target_modules)) == (want.r, want.lora_alpha, set(want.target_modules)):
                self._spares.remove(name)
                return name
        return None

    def release_adapter(self, name: str) -> None:
        """A sampler's adapter once its client is gone: kept as a spare for the next snapshot,
        or deleted when there are enough spares."""
        if self.peft is not None and name in self.peft.peft_config and len(self._spares) < SPARE_SNAPSHOTS:
            self._spares.append(name)
        else:
            self.delete_adapter(name)

    def activate(self, name: str) -> None:
        if self.peft.active_adapter != name:
            self.peft.set_adapter(name)

    def delete_adapter(self, name: str) -> None:
        if self.peft is not None and name in self.peft.peft_config and len(self.peft.peft_config) > 1:
            with warnings.catch_warnings():  # "adapter was active": every call activates its own
                warnings.simplefilter("ignore")
                self.peft.delete_adapter(name)

    def adapter_params(self, name: str) -> list[tuple[str, Any]]:
        """The trainable tensors of adapter ``name``, in a fixed order (optimizer state relies on it)."""
        return sorted(
            (n, p) for n, p in self.peft.named_parameters() if f".{name}." in n and "lora_" in n
        )

    def model_for(self, adapter: str | None) -> Any:
        """The module to run: the adapter's, or the plain base model for ``adapter=None``."""
        if adapter is None:
            return _BaseOnly(self)
        self.activate(adapter)
        return self.peft

    # -- batched sampling --------------------------------------------------------------------

    def submit_sample(self, request: Any) -> AwaitableConcurrentFuture:
        """Queue a request; requests that arrive while the worker is busy run as one batch."""
        future: Future = Future()
        with self._lock:
            self._pending_samples.append((request, future))
        self.worker.submit(self._run_pending_samples)
        return AwaitableConcurrentFuture(future)

    def _run_pending_samples(self) -> None:
        with self._lock:
            batch, self._pending_samples = self._pending_samples, []
        if batch:
            run_sample_batch(self, batch)


class _BaseOnly:
    """Calls the base model with every adapter disabled."""

    def __init__(self, host: ModelHost):
        self.host = host

    def unwrapped(self) -> tuple[Any, Any]:
        """The transformers model and a factory of the context that turns adapters off."""
        import contextlib

        peft = self.host.peft
        return self.host.model, (peft.disable_adapter if peft is not None else contextlib.nullcontext)

    def __call__(self, **kwargs: Any) -> Any:
        if self.host.peft is None:
            return self.host.model(**kwargs)
        with self.host.peft.disable_adapter():
            return self.host.peft(**kwargs)
