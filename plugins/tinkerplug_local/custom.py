"""``forward_backward_custom``: any differentiable loss of the per-datum target logprobs.

The SDK runs it on the client in two requests: a ``forward`` for the logprobs, the user's
``loss_fn(data, logprobs_list) -> (loss, metrics)`` on copies that require grad, then a
``forward_backward`` of ``cross_entropy`` with ``weights = -dloss/dlogprobs``. The model and the
user's function live in one process here, so one forward suffices: keep the graph, hand the user
detached copies, and push their gradients straight back through it. The gradient reaching the
LoRA weights is exactly the user loss's, as in the SDK.

Keeping the graph holds every microbatch's activations until the user's loss is known, so a
request larger than ``ONE_PASS_MAX_TOKENS`` takes the SDK's two passes instead (memory stays
one microbatch's).
"""

from __future__ import annotations

from typing import Any, Callable

from tinker import types

from tinkerplug_local.losses import LossSpec, check_datums

ONE_PASS_MAX_TOKENS = 16384
TARGETS_ONLY = LossSpec(fn=lambda *args: None, inputs=(), config={})  # the request checks of a loss that reads no inputs


def check_custom_request(data: list[types.Datum], loss_fn: Any, loss_type_input: Any, vocab_size: int | None = None) -> Any:
    """The loss as ``loss_fn(data, logprobs_list)``: a callable, or a ``LossHandle`` that runs
    here as the SDK runs one it did not upload (``run_loss_handle``)."""
    from tinker.lib.public_interfaces.custom_loss import LossHandle, check_loss_inputs, run_loss_handle

    if loss_type_input not in (None, "logprobs"):
        raise ValueError(f"Unsupported loss_type_input={loss_type_input!r}. Supported values are: logprobs")
    if not data:
        raise ValueError("No data provided")
    if isinstance(loss_fn, LossHandle):
        check_loss_inputs(loss_fn, data)
        handle = loss_fn
        loss_fn = lambda batch, logprobs_list: run_loss_handle(handle, batch, logprobs_list)  # noqa: E731
    if not callable(loss_fn):
        raise NotImplementedError(
            "forward_backward_custom takes a callable loss_fn(data, logprobs_list) -> (loss, metrics) or a "
            f"LossHandle from create_custom_loss; got {type(loss_fn).__name__}"
        )
    check_datums("forward_backward_custom", TARGETS_ONLY, data, vocab_size)
    return loss_fn


def run_custom(client: Any, data: list[types.Datum], loss_fn: Callable[..., Any]) -> types.ForwardBackwardOutput:
    """Runs on the worker: one pass when the request fits ``ONE_PASS_MAX_TOKENS``, else two."""
    if sum(d.model_input.length for d in data) <= ONE_PASS_MAX_TOKENS:
        return _one_pass(client, data, loss_fn)
    return _two_passes(client, data, loss_fn)


def _one_pass(client: Any, data: list[types.Datum], loss_fn: Callable[..., Any]) -> types.ForwardBackwardOutput:
    import torch

    live: list[Any] = [None] * len(data)  # logprobs still attached to the model's graph
    for batch in client._logprobs(data, grad=True):
        for i, lp in zip(batch.indices, batch.logprobs):
            live[i] = lp
    loss_sum, grads, metrics = _user_loss(data, loss_fn, [lp.detach() for lp in live])
    torch.autograd.backward(live, [g.to(lp.device) for g, lp in zip(grads, live)])
    outputs = [{"logprobs": types.TensorData.from_torch(lp.detach().cpu())} for lp in live]
    return _custom_output(outputs, live, grads, loss_sum, metrics)


def _two_passes(client: Any, data: list[types.Datum], loss_fn: Callable[..., Any]) -> types.ForwardBackwardOutput:
    """The SDK's way: logprobs without a graph, the user's loss, then a linear surrogate's backward."""
    values: list[Any] = [None] * len(data)
    for batch in client._logprobs(data, grad=False):
        for i, lp in zip(batch.indices, batch.logprobs):
            values[i] = lp
    loss_sum, grads, metrics = _user_loss(data, loss_fn, values)
    result = client._run_forward(data, lambda i, lp: (lp * grads[i].to(lp.device)).sum(), backward=True)
    outputs = result.loss_fn_outputs
    return _custom_output(outputs, values, grads, loss_sum, metrics)


def _user_loss(data: list[types.Datum], loss_fn: Callable[..., Any], values: list[Any]) -> tuple[float, list[Any], dict]:
    """Call the user's loss on leaf copies (CPU float32, requiring grad, as the SDK hands them)."""
    leaves = [v.detach().cpu().float().clone().requires_grad_(True) for v in values]
    result = loss_fn(data, leaves)
    if not (isinstance(result, tuple) and len(result) == 2):
        raise TypeError(f"forward_backward_custom: loss_fn must return (loss, metrics), got {type(result).__name__}")
    loss, metrics = result
    loss_sum = float(loss.detach().sum())
    loss.backward()
    missing = [i for i, leaf in enumerate(leaves) if leaf.grad is None]
    if missing:
        raise ValueError(f"forward_backward_custom: the loss does not depend on the logprobs of datum {missing[0]}")
    return loss_sum, [leaf.grad for leaf in leaves], dict(metrics or {})


def _custom_output(outputs: list[Any], logprobs: list[Any], grads: list[Any], loss_sum: float, metrics: dict) -> Any:
    # The SDK's metrics: the user's, then loss:sum (the user's loss) and the surrogate's sum.
    surrogate = sum(float((lp.detach().cpu().float() * g).sum()) for lp, g in zip(logprobs, grads))
    merged = {**metrics, "loss:sum": loss_sum, "surrogate_loss:sum": surrogate}
    return types.ForwardBackwardOutput(loss_fn_output_type="TensorData", loss_fn_outputs=outputs, metrics=merged)
