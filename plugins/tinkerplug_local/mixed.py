"""Mixed-adapter batches: one forward (and backward) over the rows of several LoRA adapters on
one base model, each row with its own adapter, as multi-LoRA inference servers do.

PEFT's own per-row selection (``adapter_names``) is refused in training mode and selects per
batch row only, while packed rows here hold several datums. ``MixedLora`` instead replaces, for
the duration of a batch, the ``forward`` of every LoRA ``Linear`` layer: the base layer runs on
the whole input, and each segment of the input (a run of batch rows, or a run of tokens of a
packed row) gets ``B(A x) * scale`` of its own adapter (``_mixed_forward``). A segment whose
adapter does not have the layer (another rank or other target modules) or that has no adapter
(the base model) gets nothing added. Each adapter's weights see only its own segment's tokens,
so its gradients, and every row's output, are those of running alone (to fp32 rounding).
Everything here runs on the host's compute threads; each thread's batch has its own mixer.
"""

from __future__ import annotations

import functools
import threading
import weakref
from typing import Any, Hashable, Sequence

Segments = list[tuple[Any, int]]  # (adapter name or None, length along the split dimension)


def runs(adapters: Sequence[Any], lengths: Sequence[int] | None = None) -> Segments:
    """Consecutive equal adapters merged into one segment; each item is ``lengths[i]`` long (1)."""
    out: Segments = []
    for i, adapter in enumerate(adapters):
        n = 1 if lengths is None else lengths[i]
        if out and out[-1][0] == adapter:
            out[-1] = (adapter, out[-1][1] + n)
        else:
            out.append((adapter, n))
    return out


def grouped(indices: Sequence[int], adapters: Sequence[Any]) -> list[int]:
    """``indices`` with equal adapters next to each other (first-seen order, stable), so that
    a microbatch splits into as few segments as it has adapters."""
    order: dict[Hashable, int] = {}
    for i in indices:
        order.setdefault(adapters[i], len(order))
    return sorted(indices, key=lambda i: order[adapters[i]])


_layers: "weakref.WeakKeyDictionary[Any, tuple[tuple[str, ...], list[Any] | None]]" = weakref.WeakKeyDictionary()


def lora_layers(peft: Any) -> list[Any] | None:
    """The LoRA layers of ``peft`` if every one is a plain LoRA ``Linear`` this module can
    dispatch (no DoRA or other variant, no dropout, not merged); None otherwise. Looked up
    again only when the adapters change (walking the modules costs ~1 ms per batch)."""
    names = tuple(peft.peft_config)
    cached = _layers.get(peft)
    if cached is None or cached[0] != names:
        cached = _layers[peft] = (names, _plain_lora_layers(peft))
    return cached[1]


def _plain_lora_layers(peft: Any) -> list[Any] | None:
    import torch
    from peft.tuners.lora import LoraLayer

    layers = [m for m in peft.modules() if isinstance(m, LoraLayer)]
    for layer in layers:
        plain = type(getattr(layer, "base_layer", None)) is torch.nn.Linear and not layer.merged
        plain = plain and not getattr(layer, "lora_variant", {})
        if not plain or not all(isinstance(d, torch.nn.Identity) for d in layer.lora_dropout.values()):
            return None
    return layers


class MixedLora:
    """While entered, the LoRA layers of ``peft`` apply per-segment adapters (``set``)."""

    def __init__(self, peft: Any, layers: list[Any]):
        self.peft = peft
        self.layers = layers
        self.dim = 0
        self.segments: Segments = []
        self._masks: dict[Any, Any] = {}

    def set(self, dim: int, segments: Segments) -> None:
        """The next forwards split their input along ``dim`` (0: batch rows; 1: the tokens of a
        packed row) into ``segments``. Kept until the next ``set``: a backward that recomputes
        layers (gradient checkpointing) runs before it."""
        self.dim, self.segments, self._masks = dim, segments, {}

    def mask(self, x: Any, adapters: tuple[str, ...], layer: Any) -> Any:
        """``(.., sum of ranks)``, broadcastable against ``x``'s ``A x``: each position's adapter
        scale in its adapter's block of rank columns, 0 elsewhere (built once per batch and set
        of adapters)."""
        import torch

        key = (adapters, tuple(layer.lora_A[a].weight.shape[0] for a in adapters), x.dim(), x.device, x.dtype)
        if key not in self._masks:
            blocks = {a: (sum(key[1][:i]), key[1][i], layer.scaling[a]) for i, a in enumerate(adapters)}
            rows = torch.zeros(len(self.segments), sum(key[1]), dtype=x.dtype)
            for row, (adapter, _) in enumerate(self.segments):
                if adapter in blocks:
                    start, rank, scale = blocks[adapter]
                    rows[row, start : start + rank] = scale
            per_position = rows.repeat_interleave(torch.tensor([n for _, n in self.segments]), dim=0)
            shape = [1] * (x.dim() - 1) + [per_position.shape[-1]]
            shape[self.dim] = per_position.shape[0]
            self._masks[key] = per_position.reshape(shape).to(x.device)
        return self._masks[key]

    def __enter__(self) -> "MixedLora":
        """This thread's forwards through the LoRA layers use this mixer; another compute
        thread (worker.py) may run its own mixer on the same layers at the same time."""
        _install(self.layers)
        _current.mixer = self
        return self

    def __exit__(self, *exc: Any) -> None:
        _current.mixer = None
        _uninstall(self.layers)


_current = threading.local()  # the mixer of this thread's batch, if any
_installs: dict[int, int] = {}  # id(layer) -> mixers using it, on any thread
_install_lock = threading.Lock()


def _install(layers: list[Any]) -> None:
    with _install_lock:
        for layer in layers:
            if _installs.get(id(layer), 0) == 0:
                layer.forward = functools.partial(_dispatch, layer)
            _installs[id(layer)] = _installs.get(id(layer), 0) + 1


def _uninstall(layers: list[Any]) -> None:
    with _install_lock:
        for layer in layers:
            _installs[id(layer)] -= 1
            if _installs[id(layer)] == 0:
                del _installs[id(layer)]
                layer.__dict__.pop("forward", None)


def _dispatch(layer: Any, x: Any, *args: Any, **kwargs: Any) -> Any:
    mixer = getattr(_current, "mixer", None)
    if mixer is None:  # a thread without a mixer: PEFT's own forward (its active adapter)
        return type(layer).forward(layer, x, *args, **kwargs)
    return _mixed_forward(layer, mixer, x, *args, **kwargs)


def _mixed_forward(layer: Any, mixer: MixedLora, x: Any, *args: Any, **kwargs: Any) -> Any:
    """PEFT's LoRA forward with each segment's own adapter. One adapter: ``B(A x) * scale``
    as PEFT computes it. Several: every adapter's A stacked (``A x`` for all of them in one
    matmul), masked so that each position keeps only its own adapter's block (times its
    scale), then every B stacked: three calls instead of three per adapter; the masked zeros
    add nothing, and no adapter's weights get a gradient from another's positions."""
    import torch

    result = layer.base_layer(x, *args, **kwargs)
    if sum(n for _, n in mixer.segments) != x.shape[mixer.dim]:
        raise RuntimeError(f"mixed-adapter batch: segments do not cover the {x.shape[mixer.dim]} positions (a bug)")
    adapters = tuple(dict.fromkeys(a for a, _ in mixer.segments if a is not None and a in layer.lora_A))
    if not adapters:
        return result
    if len(mixer.segments) == 1:
        lora_a = layer.lora_A[adapters[0]]
        delta = layer.lora_B[adapters[0]](lora_a(x.to(lora_a.weight.dtype))) * layer.scaling[adapters[0]]
        return (result + delta).to(result.dtype)
    weight_a = torch.cat([layer.lora_A[a].weight for a in adapters])
    weight_b = torch.cat([layer.lora_B[a].weight for a in adapters], dim=1)
    x = x.to(weight_a.dtype)
    down = torch.nn.functional.linear(x, weight_a) * mixer.mask(x, adapters, layer)
    return (result + torch.nn.functional.linear(down, weight_b)).to(result.dtype)
