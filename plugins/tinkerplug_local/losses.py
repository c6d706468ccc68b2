"""Loss functions, computed exactly as the Tinker service defines them."""

from __future__ import annotations

from typing import Any

SUPPORTED = ("cross_entropy",)


def check_loss_fn(loss_fn: str) -> None:
    if loss_fn not in SUPPORTED:
        raise NotImplementedError(
            f"loss_fn {loss_fn!r} is not supported by the local backend; supported: {', '.join(SUPPORTED)}"
        )


def cross_entropy(target_logprobs: Any, weights: Any) -> Any:
    """``sum(-target_logprobs * weights)`` over every token of every datum: a sum, not a mean."""
    return -(target_logprobs * weights).sum()
