"""Mixed-adapter batches: one forward (and backward) over the rows of several LoRA adapters on
one base model, each row with its own adapter, as multi-LoRA inference servers do.

PEFT's own per-row selection (``adapter_names``) is refused in training mode and selects per
batch row only, while packed rows here hold several datums. ``MixedLora`` instead replaces, for
the duration of a batch, the ``forward`` of every LoRA ``Linear`` layer: the base layer runs on
the whole input, and each segment of the input (a run of batch rows, or a run of tokens of a
packed row) gets ``B(A x) * scale`` of its own adapter, with PEFT's arithmetic. A segment whose
adapter does not have the layer (another rank or other target modules) or that has no adapter
(the base model) gets nothing added. Each adapter's weights see only its own segment's tokens,
so its gradients, and every row's output, are those of running alone (to fp32 rounding).
Everything here runs on the host's worker thread.
"""

from __future__ import annotations

import functools
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


def lora_layers(peft: Any) -> list[Any] | None:
    """The LoRA layers of ``peft`` if every one is a plain LoRA ``Linear`` this module can
    dispatch (no DoRA or other variant, no dropout, not merged); None otherwise."""
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

    def set(self, dim: int, segments: Segments) -> None:
        """The next forwards split their input along ``dim`` (0: batch rows; 1: the tokens of a
        packed row) into ``segments``. Kept until the next ``set``: a backward that recomputes
        layers (gradient checkpointing) runs before it."""
        self.dim, self.segments = dim, segments

    def __enter__(self) -> "MixedLora":
        for layer in self.layers:
            layer.forward = functools.partial(_mixed_forward, layer, self)
        return self

    def __exit__(self, *exc: Any) -> None:
        for layer in self.layers:
            layer.__dict__.pop("forward", None)


def _mixed_forward(layer: Any, mixer: MixedLora, x: Any, *args: Any, **kwargs: Any) -> Any:
    import torch

    result = layer.base_layer(x, *args, **kwargs)
    dim, segments = mixer.dim, mixer.segments
    lengths = [n for _, n in segments]
    if sum(lengths) != x.shape[dim]:
        raise RuntimeError(f"mixed-adapter batch: segments cover {sum(lengths)} of {x.shape[dim]} positions (a bug)")
    deltas = []
    for (adapter, n), piece in zip(segments, x.split(lengths, dim)):
        if adapter is None or adapter not in layer.lora_A:
            shape = list(result.shape)
            shape[dim] = n
            deltas.append(result.new_zeros(shape))
            continue
        lora_a = layer.lora_A[adapter]
        deltas.append(layer.lora_B[adapter](lora_a(piece.to(lora_a.weight.dtype))) * layer.scaling[adapter])
    delta = deltas[0] if len(deltas) == 1 else torch.cat(deltas, dim)
    return (result + delta).to(result.dtype)
