"""Batched token generation with a KV cache, per-row sampling parameters and stop conditions."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch


@dataclass
class Row:
    """One sequence to generate."""

    prompt: list[int]
    max_tokens: int
    temperature: float
    top_k: int
    top_p: float
    stop_ids: set[int]
    stop_strings: list[str]
    generator: torch.Generator | None
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    stop_reason: str = "length"
    done: bool = False


def _choose(logits: torch.Tensor, row: Row) -> tuple[int, float]:
    """Pick the next token for one row; return it and its logprob under the sampling distribution."""
    if row.temperature <= 0:
        logprobs = torch.log_softmax(logits.float(), dim=-1)
        token = int(torch.argmax(logprobs))
        return token, float(logprobs[token])
    scaled = logits.float() / row.temperature
    if 0 < row.top_k < scaled.numel():
        kth = torch.topk(scaled, row.top_k).values[-1]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    if row.top_p < 1.0:
        sorted_logits, order = torch.sort(scaled, descending=True)
        cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(-1)
        remove = cumulative - torch.softmax(sorted_logits, dim=-1) > row.top_p  # keep the token that crosses top_p
        scaled = scaled.scatter(0, order[remove], float("-inf"))
    logprobs = torch.log_softmax(scaled, dim=-1)
    token = int(torch.multinomial(logprobs.exp(), 1, generator=row.generator))
    return token, float(logprobs[token])


def _stopped_by_string(row: Row, tokenizer: Any) -> bool:
    if not row.stop_strings:
        return False
    text = tokenizer.decode(row.tokens[-32:])  # stop strings are short: the tail suffices
    return any(s in text for s in row.stop_strings)


def _last_logits_only(model: Any) -> dict[str, Any]:
    """``logits_to_keep=1`` where the model takes it: the prefill then computes one position's
    logits per row, not the whole prompt's (at a 152 k vocabulary, 600 KB per token)."""
    import inspect

    unwrap = getattr(model, "unwrapped", None)
    causal = unwrap()[0] if unwrap else (model.get_base_model() if hasattr(model, "get_base_model") else model)
    return {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(causal.forward).parameters else {}


@torch.no_grad()
def generate(model: Any, rows: list[Row], pad_id: int, tokenizer: Any, device: str) -> None:
    """Fill in ``tokens``, ``logprobs`` and ``stop_reason`` of every row, all rows at once."""
    if not rows:
        return
    width = max(len(r.prompt) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):  # left padding: every row's next token lands in the last column
        ids[i, width - len(row.prompt):] = torch.tensor(row.prompt)
        mask[i, width - len(row.prompt):] = 1
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **_last_logits_only(model))
    cache, logits = out.past_key_values, out.logits[:, -1, :]
    last_pos = positions[:, -1]
    for _ in range(max(r.max_tokens for r in rows)):
        next_ids = torch.full((len(rows), 1), pad_id, dtype=torch.long)
        for i, row in enumerate(rows):
            if row.done:
                continue
            token, logprob = _choose(logits[i], row)
            row.tokens.append(token)
            row.logprobs.append(logprob)
            next_ids[i, 0] = token
            if token in row.stop_ids or _stopped_by_string(row, tokenizer):
                row.done, row.stop_reason = True, "stop"
            elif len(row.tokens) >= row.max_tokens:
                row.done = True
        if all(r.done for r in rows):
            break
        mask = torch.cat([mask, torch.ones((len(rows), 1), dtype=mask.dtype, device=device)], dim=1)
        last_pos = last_pos + 1
        out = model(
            input_ids=next_ids.to(device),
            attention_mask=mask,
            position_ids=last_pos[:, None],
            past_key_values=cache,
            use_cache=True,
        )
        cache, logits = out.past_key_values, out.logits[:, -1, :]


@torch.no_grad()
def prompt_scores(
    model: Any, prompt: list[int], device: str, topk: int = 0, last_n: int | None = None, options: Any = None
) -> tuple[Any, Any]:
    """Logprob of each prompt token given the ones before it (NaN for the first, and for all but
    the last ``last_n``), and with ``topk`` the K likeliest tokens at each position, as the SDK's
    ``SampleResponse.prompt_logprobs_np`` / ``topk_prompt_logprobs_np`` hold them.

    The logprobs go through forward.py's chunked LM head (``options``: the host's
    ``ForwardOptions``): without ``topk`` a long prompt's logits are never all in memory."""
    import numpy as np
    from tinker.types.topk_logprobs import MASK_LOGPROB, TopkLogprobs

    from tinkerplug_local.forward import microbatch_logprobs

    values = np.full(len(prompt), np.nan, dtype=np.float32)
    first = len(prompt) - min(len(prompt) - 1, len(prompt) if last_n is None else last_n)
    if len(prompt) > 1:  # the same arithmetic as compute_logprobs and forward, to the last bit
        targets = [torch.tensor(prompt[1:], dtype=torch.long)]
        (batch,) = microbatch_logprobs(model, [prompt[:-1]], targets, device, 0, grad=False, options=options)
        values[1:] = batch.logprobs[0].cpu().numpy()
    values[:first] = np.nan
    if topk <= 0:
        return values, None
    # Top-k needs every position's whole distribution: the full logits, only when asked for.
    ids = torch.tensor([prompt], device=device)
    logprobs = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
    k = min(topk, logprobs.shape[-1])
    top = torch.topk(logprobs, k, dim=-1)
    token_ids = np.zeros((len(prompt), k), dtype=np.int32)
    top_lp = np.full((len(prompt), k), MASK_LOGPROB, dtype=np.float32)
    token_ids[1:], top_lp[1:] = top.indices.cpu().numpy(), top.values.cpu().numpy()
    token_ids[:first], top_lp[:first] = 0, MASK_LOGPROB
    return values, TopkLogprobs(token_ids=token_ids, logprobs=top_lp)


def prompt_logprobs(model: Any, prompt: list[int], device: str, last_n: int | None = None, options: Any = None) -> list[float | None]:
    """``prompt_scores`` as the SDK's ``compute_logprobs`` returns them: None where not computed."""
    values, _ = prompt_scores(model, prompt, device, 0, last_n, options)
    return [None if v != v else float(v) for v in values.tolist()]
