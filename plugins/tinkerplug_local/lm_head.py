"""Target-token logprobs through the LM head, a chunk of tokens at a time.

A real vocabulary makes the logits the biggest tensor by far (152 k entries per token: 600 KB
in fp32), and autograd would keep them, their log-softmax and their gradient alive for the
whole batch. Here the head runs on ``CHUNK_ELEMENTS / vocab`` tokens at a time; forward keeps
one logsumexp per token, and backward recomputes each chunk's logits and turns them into the
gradient in place, so one chunk's logits are alive in forward and in backward. Fused linear
cross-entropy kernels (Liger, TRL) compute the gradient during the forward; that needs the
loss at that point, and here the loss (any of the service's losses) is computed by the caller
from the logprobs, so backward recomputes instead.

A PEFT LoRA head (``train_unembed``) is taken apart: ``A x`` (N x r) goes through autograd,
and the function adds ``B (A x) * scale`` per chunk and returns the gradients of ``B`` and of
``A x``. Any other head module runs per chunk under ``torch.utils.checkpoint``.
"""

from __future__ import annotations

from typing import Any

import torch  # this module is imported only when a model runs (lazily, by forward.py)

# fp32 logits per chunk: 128 MB, ~220 tokens at a 152 k vocabulary. Measured on 2 CPU cores:
# 4x smaller chunks make the head ~1.7x slower (the weight is read once per chunk).
CHUNK_ELEMENTS = 1 << 25


def chunk_tokens(vocab_size: int) -> int:
    return max(16, CHUNK_ELEMENTS // max(vocab_size, 1))


def token_logprobs(hidden: Any, head: Any, targets: Any, softcap: float | None = None, lora: tuple[str, ...] | None = None) -> Any:
    """``log_softmax(head(hidden))`` at ``targets``, chunk by chunk.

    ``hidden`` is ``(N, H)``; ``targets`` is ``(N, K)`` int64 (K candidate targets per
    position); returns ``(N, K)`` fp32 logprobs with the autograd graph to ``hidden`` and the
    head's trainable weights when grad is enabled. ``lora``: the adapters of a PEFT head to
    apply (a mixed-adapter batch runs the head once per adapter); None: its active ones.
    """

    linear = _as_linear(head, lora)
    if linear is None:  # an unknown head module: generic, one checkpointed chunk at a time
        return _checkpointed(hidden, head, targets, softcap)
    weight, bias, lora = linear
    if lora is None:
        return _HeadLogprobs.apply(hidden, targets, weight, bias, None, None, 0.0, softcap)
    lora_a, lora_b, scale = lora
    # h A^T is small (N x r): autograd carries its gradient on to lora_A and to hidden.
    down = torch.nn.functional.linear(hidden.to(lora_a.dtype), lora_a)
    return _HeadLogprobs.apply(hidden, targets, weight, bias, down, lora_b, scale, softcap)


def linear_head(head: Any) -> bool:
    """Whether ``token_logprobs`` takes ``head`` apart (so it can apply any one adapter)."""
    return type(head) is torch.nn.Linear or _as_linear(head, ()) is not None


def _as_linear(head: Any, lora: tuple[str, ...] | None = None) -> tuple[Any, Any, Any] | None:
    """``(weight, bias, (lora_A, lora_B, scale) or None)`` of a Linear or a PEFT LoRA Linear
    with at most one active plain-LoRA adapter (or the one in ``lora``); None for anything else."""

    if type(head) is torch.nn.Linear:
        return head.weight, head.bias, None
    base = getattr(head, "base_layer", None)
    if type(base) is not torch.nn.Linear or not hasattr(head, "lora_A"):
        return None
    if lora is not None:
        if head.merged:
            return None
        active = [a for a in lora if a in head.lora_A]
    elif head.disable_adapters or head.merged:
        return (base.weight, base.bias, None) if not head.merged or head.disable_adapters else None
    else:
        active = [a for a in head.active_adapters if a in head.lora_A]
    if not active:
        return base.weight, base.bias, None
    if len(active) > 1 or active[0] in getattr(head, "lora_variant", {}):
        return None
    name = active[0]
    if not isinstance(head.lora_dropout[name], torch.nn.Identity):
        return None
    return base.weight, base.bias, (head.lora_A[name].weight, head.lora_B[name].weight, float(head.scaling[name]))


def _chunk_logits(hidden: Any, weight: Any, bias: Any, down: Any, lora_b: Any, scale: float, softcap: float | None) -> Any:

    logits = torch.nn.functional.linear(hidden, weight, bias)
    if down is not None:  # the order of PEFT's forward: base + B(A x) * scale
        logits = logits + torch.nn.functional.linear(down, lora_b) * scale
    logits = logits.float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return logits


class _HeadLogprobs(torch.autograd.Function):
    """Forward keeps only hidden, targets and one logsumexp per token; backward recomputes
    each chunk's logits and turns them into the softmax gradient in place:
    d logprob[t, k] / d logits[t] = onehot(target[t, k]) - softmax(logits[t])."""

    # Backward runs under the forward's autocast state (bf16 on CUDA), as a module's would.
    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx: Any, hidden, targets, weight, bias, down, lora_b, scale, softcap):  # type: ignore[override]

        step = chunk_tokens(weight.shape[0])
        picked, lse = [], []
        for start in range(0, hidden.shape[0], step):
            end = start + step
            b_down = down[start:end] if down is not None else None
            logits = _chunk_logits(hidden[start:end], weight, bias, b_down, lora_b, scale, softcap)
            lse.append(torch.logsumexp(logits, dim=-1, keepdim=True))
            picked.append(logits.gather(-1, targets[start:end]) - lse[-1])
            del logits
        ctx.save_for_backward(hidden, targets, weight, bias, down, lora_b, torch.cat(lse) if lse else hidden.new_zeros((0, 1)))
        ctx.scale, ctx.softcap, ctx.step = scale, softcap, step
        if not picked:
            return hidden.new_zeros(targets.shape, dtype=torch.float32)
        return torch.cat(picked)

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx: Any, grad: Any):  # type: ignore[override]

        hidden, targets, weight, bias, down, lora_b, lse = ctx.saved_tensors
        need_h, _, need_w, need_b, need_down, need_lora_b = ctx.needs_input_grad[:6]
        d_hidden = torch.zeros_like(hidden) if need_h else None
        d_down = torch.zeros_like(down) if need_down else None
        d_weight = torch.zeros_like(weight) if need_w else None
        d_bias = torch.zeros_like(bias) if need_b else None
        d_lora_b = torch.zeros_like(lora_b) if need_lora_b else None
        # Tokens whose logprobs get no gradient (prompt tokens: weight or advantage 0) have an
        # exactly zero logits gradient: their logits are not recomputed at all.
        live = (grad != 0).any(-1).nonzero()[:, 0]
        for start in range(0, live.shape[0], ctx.step):
            rows = live[start : start + ctx.step]
            h, g = hidden[rows], grad[rows].float()
            b_down = down[rows] if down is not None else None
            logits = _chunk_logits(h, weight, bias, b_down, lora_b, ctx.scale, ctx.softcap)
            d_logits = logits.sub_(lse[rows]).exp_().mul_(-g.sum(-1, keepdim=True))
            d_logits.scatter_add_(-1, targets[rows], g)
            if ctx.softcap:  # through tanh: 1 - (capped / cap)^2, recomputed from the raw logits
                raw = _chunk_logits(h, weight, bias, b_down, lora_b, ctx.scale, None)
                d_logits.mul_(1 - torch.tanh(raw / ctx.softcap) ** 2)
                del raw
            d_logits = d_logits.to(weight.dtype)
            if d_hidden is not None:
                d_hidden[rows] = d_logits @ weight
            if d_weight is not None:
                d_weight += d_logits.T @ h
            if d_bias is not None:
                d_bias += d_logits.sum(0)
            if down is not None:
                d_lora = d_logits.to(lora_b.dtype) * ctx.scale
                if d_down is not None:
                    d_down[rows] = d_lora @ lora_b
                if d_lora_b is not None:
                    d_lora_b += d_lora.T @ b_down
            del logits, d_logits
        return d_hidden, None, d_weight, d_bias, d_down, d_lora_b, None, None


def _checkpointed(hidden: Any, head: Any, targets: Any, softcap: float | None) -> Any:
    from torch.utils.checkpoint import checkpoint

    step = chunk_tokens(_vocab_size(head))
    pieces = []
    for start in range(0, hidden.shape[0], step):
        h, t = hidden[start : start + step], targets[start : start + step]
        if torch.is_grad_enabled():
            pieces.append(checkpoint(_module_chunk, h, t, head, softcap, use_reentrant=False))
        else:
            pieces.append(_module_chunk(h, t, head, softcap))
    if not pieces:
        return hidden.new_zeros(targets.shape, dtype=torch.float32)
    return torch.cat(pieces)


def _module_chunk(hidden: Any, targets: Any, head: Any, softcap: float | None) -> Any:

    logits = head(hidden).float()
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    # logprob = logit - logsumexp: the (C, V) log-softmax is never stored, only (C,) sums.
    return logits.gather(-1, targets) - torch.logsumexp(logits, dim=-1, keepdim=True)


def _vocab_size(head: Any) -> int:
    """Output width of an unknown head, for the chunk size; when it can't be read, assume a
    large vocabulary (small chunks: safe on memory)."""
    for module in (head, getattr(head, "base_layer", None)):
        weight = getattr(module, "weight", None)
        if weight is not None and weight.dim() == 2:
            return int(weight.shape[0])
    return 1 << 18
