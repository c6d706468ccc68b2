"""``--max-adapters``: at most N training adapters in memory per base model; the least recently
used others wait on disk with their optimizer state and come back on their next request.

Offloading writes the adapter's tensors, their accumulated gradients (a ``forward_backward``
may be waiting for its ``optim_step``) and Adam's state as they are (no conversion), deletes
the adapter from the model, and forgets the optimizer; bringing it back adds an adapter with the
same LoRA config, copies the tensors in, and loads Adam's state into a fresh optimizer over the
same parameters in the same order. The next step is the step it would have been: the tests
compare losses with an uninterrupted run. Everything here runs on the host's worker thread.
"""

from __future__ import annotations

import copy
import uuid
import warnings
from collections import OrderedDict
from pathlib import Path
from typing import Any

SLOT = "{adapter}"  # an adapter's name inside its parameter names, for files that outlive the name


class Residency:
    def __init__(self, host: Any, limit: int, directory: Path):
        self.host = host
        self.limit = limit  # 0: no limit
        self.directory = directory
        self._resident: OrderedDict[int, Any] = OrderedDict()  # id(client) -> client, least recent first
        self.offloads = 0
        self.restores = 0

    def touch(self, client: Any) -> None:
        """Before each of ``client``'s jobs: bring it back if it is on disk; others make room."""
        if self.limit <= 0:
            return
        if getattr(client, "_offloaded", None) is not None:
            self._restore(client)
        self._resident[id(client)] = client
        self._resident.move_to_end(id(client))
        while len(self._resident) > self.limit:
            _, oldest = self._resident.popitem(last=False)
            self._offload(oldest)

    def drop(self, client: Any) -> None:
        """The client is gone (its session finished): free its adapter or its file."""
        self._resident.pop(id(client), None)
        offloaded = getattr(client, "_offloaded", None)
        if offloaded is not None:
            Path(offloaded).unlink(missing_ok=True)
            client._offloaded = None
        else:
            self.host.delete_adapter(client._adapter)

    def _offload(self, client: Any) -> None:
        import torch

        name = client._adapter
        params = [(n.replace(f".{name}.", f".{SLOT}."), p) for n, p in self.host.adapter_params(name)]
        tensors = {n: p.detach().clone() for n, p in params}
        grads = {n: p.grad.detach().clone() for n, p in params if p.grad is not None}
        optimizer = client._optimizer.state_dict() if client._optimizer is not None else None
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.directory / f"{uuid.uuid4().hex}.pt"
        saved = {"config": copy.deepcopy(self.host.peft.peft_config[name]), "tensors": tensors, "grads": grads, "optimizer": optimizer}
        torch.save(saved, path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.host.peft.delete_adapter(name)
        client._offloaded, client._optimizer, client._param_list = str(path), None, None
        self.offloads += 1

    def _restore(self, client: Any) -> None:
        import torch

        path = Path(client._offloaded)
        saved = torch.load(path, map_location=self.host.device, weights_only=False)  # our own file, written above
        name = self.host.add_adapter_like(saved["config"])
        params = dict(self.host.adapter_params(name))
        with torch.no_grad():
            for slot_name, tensor in saved["tensors"].items():
                param = params[slot_name.replace(f".{SLOT}.", f".{name}.")]
                param.copy_(tensor)
                grad = saved["grads"].get(slot_name)
                param.grad = grad.clone() if grad is not None else None
        client._adapter, client._offloaded, client._param_list = name, None, None
        if saved["optimizer"] is not None:
            client._optimizer = client._make_optimizer()
            client._optimizer.load_state_dict(saved["optimizer"])
        path.unlink(missing_ok=True)
        self.restores += 1
