"""Target-token logprobs through the LM head, a chunk of tokens at a time.

A real vocabulary makes the logits the biggest tensor by far (152 k entries per token: 600 KB
in fp32), and autograd would keep them, their log-softmax and their gradient alive for the
whole batch. Here the head runs on ``CHUNK_ELEMENTS / vocab`` tokens at a time, and with grad
each chunk is recomputed in backward (``torch.utils.checkpoint``), so one chunk's logits are
alive in forward and in backward. Fused linear cross-entropy kernels (Liger, TRL) compute the
gradient during the forward; that needs the loss at that point, and here the loss (any of the
service's losses) is computed by the caller from the logprobs, so backward recomputes instead.

The head is called as the module it is: a PEFT-wrapped ``Linear`` adds its LoRA delta and
gets its gradients (lora_A, lora_B) through autograd like any other layer.
"""

from __future__ import annotations

from typing import Any

CHUNK_ELEMENTS = 1 << 23  # fp32 logits per chunk: 32 MB; ~55 tokens at a 152 k vocabulary


def chunk_tokens(vocab_size: int) -> int:
    return max(16, CHUNK_ELEMENTS // max(vocab_size, 1))


def token_logprobs(hidden: Any, head: Any, targets: Any, softcap: float | None = None) -> Any:
    """``log_softmax(head(hidden))`` at ``targets``, chunk by chunk.

    ``hidden`` is ``(N, H)``; ``targets`` is ``(N, K)`` int64 (K candidate targets per
    position); returns ``(N, K)`` fp32 logprobs with the autograd graph to ``hidden`` and the
    head's trainable weights when grad is enabled.
    """
    import torch
    from torch.utils.checkpoint import checkpoint

    step = chunk_tokens(_vocab_size(head))
    pieces = []
    for start in range(0, hidden.shape[0], step):
        h, t = hidden[start : start + step], targets[start : start + step]
        if torch.is_grad_enabled():
            pieces.append(checkpoint(_chunk_logprobs, h, t, head, softcap, use_reentrant=False))
        else:
            pieces.append(_chunk_logprobs(h, t, head, softcap))
    if not pieces:
        return hidden.new_zeros(targets.shape, dtype=torch.float32)
    return torch.cat(pieces)


def _chunk_logprobs(hidden: Any, targets: Any, head: Any, softcap: float | None) -> Any:
    import torch

    logits = head(hidden).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    # logprob = logit - logsumexp: the (C, V) log-softmax is never stored, only (C,) sums.
    return logits.gather(-1, targets) - torch.logsumexp(logits, dim=-1, keepdim=True)


def _vocab_size(head: Any) -> int:
    weight = getattr(head, "weight", None)
    if weight is None:  # a PEFT LoRA layer keeps the Linear as base_layer
        weight = head.base_layer.weight
    return int(weight.shape[0])
