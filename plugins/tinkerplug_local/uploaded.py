"""``forward_backward(data, "custom", {"loss_id": ...})``: a loss uploaded with
``create_custom_loss``, run on the worker in the same pass as the forward.

The SDK's semantics (``tinker.lib.public_interfaces.custom_loss.run_loss_handle``): the graph
runs once per datum on ``(logprobs, *its loss_fn_inputs)``, the per-datum losses are summed
into ``loss:sum``; metrics named ``custom/<name>:sum`` are summed over datums and
``custom/<name>:mean`` averaged. The gradient is the summed loss's, through the model's own
graph: the client-side way (a forward, the loss on copies, a cross_entropy backward with
weights = -gradient) gives the same numbers with one forward more.
"""

from __future__ import annotations

import threading
from typing import Any

from tinker import types

from tinkerplug_local.loss_graph import GraphError, GraphLoss, GraphRunError, compile_graph
from tinkerplug_local.losses import LossSpec, check_datums

TRIAL_TOKENS, TRIAL_K = 5, 3  # the shapes a new loss is tried on
MAX_LOSSES = 1000  # kept per API key of a serve process (all of them in process): each up to loss_graph.MAX_NODES nodes
_TARGETS_ONLY = LossSpec(fn=lambda *args: None, inputs=(), config={})


class UploadedLosses:
    """Checked graphs by ``loss_id``, each visible to the session that created it only."""

    def __init__(self) -> None:
        self._losses: dict[str, tuple[str | None, GraphLoss]] = {}
        self._keys: dict[str, str | None] = {}  # loss_id -> the API key's name that made it (serve)
        self._lock = threading.Lock()

    def create(self, owner: str | None, loss_id: str, name: str, inputs: list[Any], nodes: list[Any],
               key: str | None = None) -> str:
        """Check the graph (``GraphError`` naming the operation) and its outputs' shapes.
        ``key``: the API key's name; each key may keep ``MAX_LOSSES``, so one cannot use up another's."""
        graph = compile_graph(name, inputs, nodes)
        _trial(graph)
        with self._lock:
            if loss_id in self._losses:
                raise ValueError(f"loss_id {loss_id!r} exists already")
            if sum(k == key for k in self._keys.values()) >= MAX_LOSSES:
                raise ValueError(f"{'key ' + repr(key) if key else 'this service'} keeps {MAX_LOSSES} custom losses, "
                                 "its limit; reuse a LossHandle, or finish sessions that made some")
            self._losses[loss_id] = (owner, graph)
            self._keys[loss_id] = key
        return loss_id

    def get(self, loss_id: Any, owner: str | None) -> GraphLoss:
        with self._lock:
            found = self._losses.get(loss_id) if isinstance(loss_id, str) else None
        if found is None or found[0] != owner:
            raise ValueError(f"loss_fn_config['loss_id'] {loss_id!r} names no loss this session created with create_custom_loss")
        return found[1]

    def drop(self, owner: str | None) -> None:
        """Forget every loss of ``owner`` (its session finished)."""
        with self._lock:
            for loss_id in [i for i, (o, _) in self._losses.items() if o == owner]:
                del self._losses[loss_id], self._keys[loss_id]

    def __len__(self) -> int:
        return len(self._losses)


def _trial(graph: GraphLoss) -> None:
    """Run the loss on small random inputs of the declared ranks: a loss whose value is not a
    scalar (or a metric that is not) is refused now, not at its first training step."""
    import torch

    shapes = {0: (), 1: (TRIAL_TOKENS,), 2: (TRIAL_TOKENS, TRIAL_K)}
    values = [-torch.rand(shapes[rank]) for rank in graph.input_ranks]
    try:
        loss, metrics = graph.run(*values)
    except GraphRunError:
        return  # the trial shapes may not suit the loss; its inputs are checked when it runs
    _check_scalars(graph, loss, metrics, "")


def _check_scalars(graph: GraphLoss, loss: Any, metrics: dict[str, Any], where: str) -> None:
    import torch

    if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
        shape = list(loss.shape) if isinstance(loss, torch.Tensor) else type(loss).__name__
        raise GraphError(f"{where}loss {graph.name!r} must return a scalar loss, got shape {shape}")
    for key, value in metrics.items():
        if not isinstance(value, torch.Tensor) or value.numel() != 1:
            raise GraphError(f"{where}loss {graph.name!r} metric {key!r} must be a scalar tensor")


def check_uploaded_request(graph: GraphLoss, data: list[types.Datum], vocab_size: int | None) -> None:
    """Targets as for any loss; each input the graph reads present, at its declared rank."""
    check_datums("custom", _TARGETS_ONLY, data, vocab_size)
    for index, datum in enumerate(data):
        for name, rank in zip(("target_tokens", *graph.input_names[1:]), graph.input_ranks):
            if name not in datum.loss_fn_inputs:
                raise ValueError(f"datum {index}: loss {graph.name!r} reads loss_fn_inputs[{name!r}], which the datum lacks")
            shape = datum.loss_fn_inputs[name].shape
            got = 1 if shape is None else len(shape)
            if got != rank:
                what = "logprobs (shaped like target_tokens)" if name == "target_tokens" else name
                raise ValueError(f"datum {index}: loss_fn_inputs[{name!r}] has rank {got}; loss {graph.name!r} declared {what} with rank {rank}")


def run_uploaded(client: Any, data: list[types.Datum], graph: GraphLoss, backward: bool) -> types.ForwardBackwardOutput:
    """Runs on the worker: the graph on each datum's logprobs, a microbatch at a time."""
    import torch

    outputs: list[Any] = [None] * len(data)
    total, sums = 0.0, {}
    for batch in client._logprobs(data, grad=backward):
        with torch.set_grad_enabled(backward):
            losses = [_run_datum(graph, data[i], i, lp, sums) for i, lp in zip(batch.indices, batch.logprobs)]
            loss = torch.stack(losses).sum()
            if backward and loss.requires_grad:
                loss.backward()  # gradients accumulate until optim_step, as with every loss
        total += float(loss.detach())
        for i, lp in zip(batch.indices, batch.logprobs):
            outputs[i] = {"logprobs": types.TensorData.from_torch(lp.detach().cpu())}
    metrics = {k: v / len(data) if k.endswith(":mean") else v for k, v in sums.items()}
    return types.ForwardBackwardOutput(loss_fn_output_type="TensorData", loss_fn_outputs=outputs, metrics={**metrics, "loss:sum": total})


def _run_datum(graph: GraphLoss, datum: types.Datum, index: int, logprobs: Any, sums: dict[str, float]) -> Any:
    inputs = [datum.loss_fn_inputs[name].to_torch().to(logprobs.device) for name in graph.input_names[1:]]
    try:
        loss, metrics = graph.run(logprobs, *inputs)
        _check_scalars(graph, loss, metrics, f"datum {index}: ")
    except GraphError as exc:
        raise ValueError(exc if str(exc).startswith("datum") else f"datum {index}: {exc}") from None
    for key, value in metrics.items():
        sums[key] = sums.get(key, 0.0) + float(value.detach())
    return loss.float()
