"""Uploaded custom losses (``ServiceClient.create_custom_loss``): the SDK's traced graph, rebuilt
from a whitelist and interpreted node by node.

A traced graph is code. Nothing in it is imported, evaluated or unpickled: each
``call_function`` target must be a name in ``FUNCTIONS`` (torch, ``torch.nn.functional`` and
``operator`` functions on tensors), each ``call_method`` a name in ``METHODS`` (tensor methods
that compute; none that leave torch, touch storage or files), ``getattr`` only reads
``ATTRIBUTES``; ``get_attr`` and ``call_module`` nodes, and anything else, are refused with
a ``GraphError`` naming the node and the operation. Arguments are the SDK's JSON encoding:
node references, numbers, strings, lists, tuples, dicts, slices, ``...``, non-finite floats
and dtypes (devices are refused: the loss runs where the logprobs are). Every intermediate
tensor is capped at ``MAX_ELEMENTS``, and the graph at ``MAX_NODES`` nodes.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any, Callable

MAX_NODES = 2000
MAX_ELEMENTS = 16_000_000

_TORCH = (
    "abs clamp clip cat stack dot exp expm1 log log1p log2 logsumexp sigmoid tanh softmax log_softmax sum mean "
    "minimum maximum min max amax amin where sqrt square pow neg sign relu gather ones_like zeros_like full_like "
    "cumsum flip isfinite nan_to_num lt le gt ge eq ne logical_and logical_or logical_not matmul mul add sub div "
    "exp2 norm prod var std squeeze unsqueeze reshape flatten transpose masked_fill any all"
).split()
_FUNCTIONAL = "logsigmoid softplus relu log_softmax softmax sigmoid mse_loss silu gelu".split()
_OPERATOR = "add sub mul truediv floordiv mod pow neg pos abs getitem lt le gt ge eq ne and_ or_ invert matmul".split()
_MATH = "exp log log1p sqrt".split()
METHODS = frozenset((
    "abs clamp clamp_min clamp_max clip detach float double exp expm1 log log1p sigmoid tanh softmax log_softmax "
    "sum mean max min amax amin logsumexp reshape view flatten squeeze unsqueeze transpose permute t neg pow sqrt "
    "square sign relu gather index_select masked_fill where cumsum dot matmul mul add sub div size dim numel "
    "ne eq lt gt le ge logical_not logical_and logical_or any all nan_to_num expand expand_as flip std var norm "
    "prod type_as isfinite minimum maximum contiguous to"
).split())
ATTRIBUTES = frozenset({"shape", "ndim", "dtype", "T"})
DTYPES = frozenset({"float32", "float64", "float16", "bfloat16", "int64", "int32", "bool"})


class GraphError(ValueError):
    """A graph the server will not run: the message names the node and why."""


class GraphRunError(GraphError):
    """torch's own error while running an allowed operation (a shape mismatch, say)."""


_functions: dict[str, Callable[..., Any]] | None = None


def functions() -> dict[str, Callable[..., Any]]:
    """Qualified name (as the SDK's ``encode_graph`` writes it) -> the function it may call."""
    global _functions
    if _functions is None:
        import torch
        import torch.nn.functional as F
        from torch.fx.node import _get_qualified_name

        allowed = [getattr(torch, n) for n in _TORCH] + [getattr(F, n) for n in _FUNCTIONAL]
        table = {_get_qualified_name(f): f for f in allowed}
        table.update({f"operator.{n}": _operand_checked(getattr(operator, n)) for n in _OPERATOR})
        table.update({f"math.{n}": getattr(math, n) for n in _MATH})
        table["getattr"] = _read_attribute
        _functions = table
    return _functions


def _operand_checked(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Python operators on tensors and numbers only (``[0] * 10**9`` or ``10 ** 10**9`` would
    exhaust the worker); ``getitem`` may also index a shape or a tuple."""
    import torch

    def checked(*args: Any) -> Any:
        for i, arg in enumerate(args):
            if isinstance(arg, (torch.Tensor, bool, int, float)) or (fn is operator.getitem and i == 0 and isinstance(arg, tuple)):
                continue
            if fn is operator.getitem and i == 1 and isinstance(arg, (slice, tuple, list, type(Ellipsis), type(None))):
                continue
            raise GraphError(f"operator.{fn.__name__} on a {type(arg).__name__} is not allowed (tensors and numbers only)")
        if fn is operator.pow and not any(isinstance(a, torch.Tensor) for a in args) and abs(args[1]) > 64:
            raise GraphError(f"operator.pow with exponent {args[1]} on numbers is not allowed")
        return fn(*args)

    checked.__name__ = fn.__name__
    return checked


def _read_attribute(value: Any, name: str) -> Any:
    if name not in ATTRIBUTES:
        raise GraphError(f"getattr(..., {name!r}) is not allowed; a loss may read {', '.join(sorted(ATTRIBUTES))}")
    return getattr(value, name)


@dataclass(frozen=True)
class Step:
    name: str
    op: str  # placeholder, call_function, call_method, output
    target: Any  # the callable (call_function), the method name, or the input name
    args: Any
    kwargs: Any


@dataclass(frozen=True)
class GraphLoss:
    """A checked graph: ``run(logprobs, *inputs) -> (loss, metrics)``."""

    name: str
    input_names: tuple[str, ...]  # logprobs first
    input_ranks: tuple[int, ...]
    steps: tuple[Step, ...]

    def run(self, *values: Any) -> tuple[Any, dict[str, Any]]:
        env: dict[str, Any] = dict(zip(self.input_names, values))
        for step in self.steps:
            if step.op == "placeholder":
                continue
            args, kwargs = _resolve(step.args, env), _resolve(step.kwargs, env)
            if step.op == "output":
                return args[0]
            try:
                out = step.target(*args, **kwargs) if step.op == "call_function" else _call_method(step, args, kwargs)
            except GraphError:
                raise
            except Exception as exc:  # noqa: BLE001 - torch's own errors, named after the node
                raise GraphRunError(f"node {step.name!r}: {type(exc).__name__}: {exc}") from None
            if getattr(out, "numel", None) is not None and callable(out.numel) and out.numel() > MAX_ELEMENTS:
                raise GraphError(f"node {step.name!r} made a tensor of {out.numel()} elements (the limit is {MAX_ELEMENTS})")
            env[step.name] = out
        raise GraphError("the graph has no output node")


def _call_method(step: Step, args: list[Any], kwargs: dict[str, Any]) -> Any:
    import torch

    if not (args and isinstance(args[0], torch.Tensor)):
        raise GraphError(f"node {step.name!r} calls {step.target!r} on something that is not a tensor")
    return getattr(args[0], step.target)(*args[1:], **kwargs)


class _Ref(str):
    """A reference to an earlier node's value."""


def compile_graph(name: str, inputs: list[Any], nodes: list[Any]) -> GraphLoss:
    """Check every node against the whitelist; raise ``GraphError`` naming the first bad one."""
    if len(nodes) > MAX_NODES:
        raise GraphError(f"the graph has {len(nodes)} nodes; the limit is {MAX_NODES}")
    input_names = tuple(i.name for i in inputs)
    if not input_names or input_names[0] != "logprobs":
        raise GraphError("a custom loss takes logprobs first, then the loss_fn_inputs it reads")
    seen: set[str] = set()
    steps = [_step(node, seen, input_names) for node in nodes]
    placeholders = tuple(s.target for s in steps if s.op == "placeholder")
    if placeholders != input_names:
        raise GraphError(f"the graph's inputs {list(placeholders)} are not the declared inputs {list(input_names)}")
    if not steps or steps[-1].op != "output":
        raise GraphError("the graph must end with its output node")
    _check_output(steps[-1].args)
    return GraphLoss(name, input_names, tuple(i.rank for i in inputs), tuple(steps))


def _step(node: Any, seen: set[str], input_names: tuple[str, ...]) -> Step:
    where = f"node {node.name!r}"
    if node.name in seen:
        raise GraphError(f"{where} is defined twice")
    args = _decode(list(node.args), seen, where)
    kwargs = {str(k): _decode(v, seen, where) for k, v in dict(node.kwargs).items()}
    if {"device", "out"} & set(kwargs) or (node.op == "call_method" and node.target == "to" and any(isinstance(a, str) for a in args)):
        raise GraphError(f"{where} names a device or an output tensor; a loss runs where its logprobs are and makes new tensors")
    if node.op == "placeholder":
        target: Any = node.target
    elif node.op == "call_function":
        target = functions().get(node.target)
        if target is None:
            raise GraphError(f"{where} calls {node.target!r}, which is not an allowed operation (torch, "
                             "torch.nn.functional and operator functions on tensors only)")
        if node.target == "getattr" and (len(args) != 2 or args[1] not in ATTRIBUTES):
            raise GraphError(f"{where} calls getattr with {str(args[1:])[:60]}; a loss may read {', '.join(sorted(ATTRIBUTES))} only")
    elif node.op == "call_method":
        if node.target not in METHODS:
            raise GraphError(f"{where} calls method {node.target!r}, which is not an allowed tensor method")
        target = node.target
    elif node.op == "output":
        target = None
    else:
        raise GraphError(f"{where}: {node.op} {node.target!r} is not allowed; a loss may only read its inputs and call functions")
    seen.add(node.name)
    return Step(node.name, node.op, target, args, kwargs)


def _decode(value: Any, seen: set[str], where: str) -> Any:
    """The SDK's argument encoding, with references checked to point backwards."""
    import torch

    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, list):
        return [_decode(v, seen, where) for v in value]
    if not (isinstance(value, dict) and len(value) == 1):
        raise GraphError(f"{where} has an argument the server cannot read: {str(value)[:80]}")
    (kind, body), = value.items()
    if kind == "ref":
        if body not in seen:
            raise GraphError(f"{where} refers to {body!r}, which is not an earlier node")
        return _Ref(body)
    if kind in ("tuple", "slice") and isinstance(body, list):
        items = [_decode(v, seen, where) for v in body]
        return tuple(items) if kind == "tuple" else slice(*items)
    if kind == "dict" and isinstance(body, dict):
        return {str(k): _decode(v, seen, where) for k, v in body.items()}
    if kind == "ellipsis":
        return Ellipsis
    if kind == "float" and body in ("inf", "-inf", "nan"):
        return float(body)
    if kind == "dtype" and body in DTYPES:
        return getattr(torch, body)
    raise GraphError(f"{where} has a {kind!r} argument {str(body)[:40]!r}, which a loss may not use")


def _resolve(value: Any, env: dict[str, Any]) -> Any:
    if isinstance(value, _Ref):
        return env[value]
    if isinstance(value, list):
        return [_resolve(v, env) for v in value]
    if isinstance(value, tuple):
        return tuple(_resolve(v, env) for v in value)
    if isinstance(value, dict):
        return {k: _resolve(v, env) for k, v in value.items()}
    if isinstance(value, slice):
        return slice(_resolve(value.start, env), _resolve(value.stop, env), _resolve(value.step, env))
    return value


def _check_output(args: Any) -> None:
    out = args[0] if isinstance(args, list) and len(args) == 1 else None
    if not (isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], _Ref) and isinstance(out[1], dict)):
        raise GraphError("the graph must return (loss, metrics): a tensor and a dict of tensors")
    for key, metric in out[1].items():
        if not (key.startswith("custom/") and key.endswith((":sum", ":mean")) and isinstance(metric, _Ref)):
            raise GraphError(f"metric {key!r} must be a tensor named custom/<name>:sum or custom/<name>:mean")
