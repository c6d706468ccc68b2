"""One loaded base model with its LoRA adapters: a training adapter per training client, a
frozen adapter per sampler read from disk, and sampler slots that in-memory snapshots are
copied into to sample. Every method runs on one of the host's worker threads."""

from __future__ import annotations

import contextlib
import itertools
import threading
import warnings
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Iterator

from tinker.lib.public_interfaces.api_future import AwaitableConcurrentFuture

from tinkerplug_local.sample_batches import run_sample_batch
from tinkerplug_local.worker import Worker
from tinkerplug_local.loading import ModelSource, load_model_and_tokenizer

LORA_ALPHA = 32  # fixed, as on the service: with alpha/r scaling the best LR barely depends on rank
MAX_MERGED_REQUESTS = 16  # requests of different lanes (keys) in one mixed-adapter batch at most


class ModelHost:
    def __init__(self, source: ModelSource, device: str, dtype: Any, forward_options: Any = None, max_adapters: int = 0,
                 offload_dir: Any = None, mixed_batches: bool = False, compute_threads: int = 1):
        """``max_adapters``: training adapters kept in memory (0: all); the others wait in ``offload_dir``.
        ``mixed_batches``: requests of several clients (adapters) queued together run as one batch.
        ``compute_threads``: with mixed batches, batches of different clients may run side by side
        on this many threads (not with ``max_adapters`` or gradient checkpointing, which change
        the model under a running batch)."""
        from pathlib import Path

        from tinkerplug_local.forward import ForwardOptions
        from tinkerplug_local.residency import Residency

        self.source = source
        self.device = device
        self.forward_options = forward_options or ForwardOptions()
        side_by_side = mixed_batches and max_adapters <= 0 and not self.forward_options.gradient_checkpointing
        threads = max(1, compute_threads) if side_by_side else 1
        self.shared = threads > 1  # training jobs of different keys may run at the same time
        self.solo_lock = threading.Lock()
        self._cores, self.worker_threads = _torch_threads(), threads
        self.worker = Worker(f"tinkerplug-local:{source.name}", threads, self._size_torch_threads if self.shared else None)
        self.model, self.tokenizer = self.worker.submit(
            lambda: load_model_and_tokenizer(source, device, dtype)
        ).result()
        self._linear_groups = self._classify_linears()
        self.vocab_size: int = self.model.get_input_embeddings().num_embeddings  # token ids are checked against it
        self.peft: Any = None  # the PeftModel, once the first adapter exists
        self._names = itertools.count()
        self._pending_samples: list[tuple[Any, Future]] = []
        self._snapshots: dict[str, Snapshot] = {}  # sampler snapshots, as tensors
        self._slots: OrderedDict[str, str | None] = OrderedDict()  # sampler slot -> snapshot it holds, LRU first
        self._slot_shapes: dict[str, tuple] = {}
        self.slot_loads = 0  # snapshots copied into a slot
        self._lock = threading.Lock()
        self.residency = Residency(self, max_adapters, Path(offload_dir or ".") / ".offload" / source.name)
        self.mixed_batches = mixed_batches
        self.worker.batch_most = MAX_MERGED_REQUESTS if mixed_batches else 1
        self.mixed_runs = self.mixed_requests = 0  # training batches of several adapters, and their requests
        self.mixed_samples = 0  # sample batches that held several adapters

    def _size_torch_threads(self) -> None:
        """On each compute thread, before any job: torch's own threads split over the compute
        threads. Set once: changing it while another thread ran a matmul gave wrong results
        (torch 2.13, MKL). ``set_num_threads`` also stores the count that every thread started
        later takes at its first torch call, so that count is put back from a passing thread;
        this thread's own count is settled first (``get_num_threads`` does that), or its first
        operation would take the stored count over the one set here."""
        import torch

        torch.get_num_threads()
        torch.set_num_threads(max(1, self._cores // self.worker_threads))
        restore = threading.Thread(target=torch.set_num_threads, args=(self._cores,))
        restore.start()
        restore.join()

    def count_mixed(self, requests: int) -> None:
        with self._lock:
            self.mixed_runs += 1
            self.mixed_requests += requests

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
        name = f"adapter{next(self._names)}"
        with torch_rng_kept(), warnings.catch_warnings():
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
        to ``source`` later. No disk round trip (an RL loop takes one every step), and no PEFT
        adapter either: the copy is plain tensors, put into a sampler slot when a batch samples
        from it (``bind``). Adding an adapter walks every module of the model, and the walk
        grows with the adapters, so a server whose clients keep their samplers would slow down
        with every snapshot."""
        from tinkerplug_local.residency import SLOT

        config = self.peft.peft_config[source]
        name = f"sampler{next(self._names)}"
        tensors = {n.replace(f".{source}.", f".{SLOT}."): p.detach().clone() for n, p in self.adapter_params(source)}
        self._snapshots[name] = Snapshot(_shape(config), config, tensors)
        return name

    def bind(self, names: set[Any]) -> dict[Any, Any]:
        """The PEFT adapter that runs each of ``names`` in the next batch: a snapshot is copied
        into a sampler slot of its shape (none if it still holds it), the least recently used
        one that no other name of the batch needs, or a new slot; anything else is its own
        adapter (None: the base model). Slots grow only to the most snapshots one batch holds."""
        bound: dict[Any, Any] = {}
        for name in names:
            snapshot = self._snapshots.get(name)
            bound[name] = name if snapshot is None else self._slot_for(name, snapshot, set(bound.values()))
        return bound

    def _slot_for(self, name: str, snapshot: "Snapshot", taken: set[Any]) -> str:
        import torch

        from tinkerplug_local.residency import SLOT

        slot = next((s for s, held in self._slots.items() if held == name), None)
        if slot is None:
            slot = next((s for s in self._slots if s not in taken and self._slot_shapes[s] == snapshot.shape), None)
            slot = slot or self._add_slot(snapshot)
            params = dict(self.adapter_params(slot))
            with torch.no_grad():
                for param_name, tensor in snapshot.tensors.items():
                    params[param_name.replace(f".{SLOT}.", f".{slot}.")].copy_(tensor)
            self.slot_loads += 1
        self._slots[slot] = name
        self._slots.move_to_end(slot)
        return slot

    def _add_slot(self, snapshot: "Snapshot") -> str:
        import copy

        name = f"slot{next(self._names)}"
        config = copy.deepcopy(snapshot.config)
        config.inference_mode = True
        with torch_rng_kept(), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.peft.add_adapter(name, config)
        for _, tensor in self.adapter_params(name):
            tensor.requires_grad_(False)
        self._slot_shapes[name] = snapshot.shape
        return name

    def release_adapter(self, name: str) -> None:
        """A sampler's weights once its client is gone: a snapshot's tensors are dropped (its
        slot stays for the next ones); an adapter read from disk is deleted."""
        if self._snapshots.pop(name, None) is not None:
            for slot, held in self._slots.items():
                if held == name:
                    self._slots[slot] = None
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


@dataclass
class Snapshot:
    """A sampler snapshot: an adapter's tensors (named with residency's ``SLOT``) and its config."""

    shape: tuple  # what a slot must have to hold it
    config: Any
    tensors: dict[str, Any]


def _shape(config: Any) -> tuple:
    return config.r, config.lora_alpha, tuple(sorted(config.target_modules))


def _torch_threads() -> int:
    import torch

    return torch.get_num_threads()


@contextlib.contextmanager
def torch_rng_kept() -> Iterator[None]:
    """A new adapter's random init must not disturb the global RNG."""
    import torch

    with torch.random.fork_rng(devices=[]):
        yield


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
