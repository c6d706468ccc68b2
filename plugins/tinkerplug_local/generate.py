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
    adapter: Any = None  # in a mixed-adapter batch: the row's LoRA adapter (mixed.py)
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    stop_reason: str = "length"
    done: bool = False


def _sampling_key(row: Row) -> tuple[float, int, float]:
    """Rows with equal keys draw from the same transform of their logits."""
    return (0.0, 0, 1.0) if row.temperature <= 0 else (row.temperature, row.top_k, row.top_p)


def choose_tokens(logits: torch.Tensor, rows: list[Row]) -> tuple[list[int], list[float]]:
    """The next token of every row and its logprob under the row's sampling distribution,
    vectorized over the rows that share sampling parameters. A row draws one uniform from its
    own generator (seeded requests) and inverts its distribution's CDF, so what it samples
    does not depend on the other rows in the batch."""
    tokens = torch.empty(len(rows), dtype=torch.long)
    logprobs = torch.empty(len(rows))
    groups: dict[tuple[float, int, float], list[int]] = {}
    for i, row in enumerate(rows):
        groups.setdefault(_sampling_key(row), []).append(i)
    for (temperature, top_k, top_p), indices in groups.items():
        index = torch.tensor(indices)
        scaled = logits[index.to(logits.device)].float()
        if temperature <= 0:
            picked = torch.argmax(scaled, dim=-1)
            logprob = torch.log_softmax(scaled, dim=-1)
        else:
            logprob = torch.log_softmax(_truncated(scaled / temperature, top_k, top_p), dim=-1)
            picked = _inverse_cdf(logprob.exp(), [rows[i].generator for i in indices])
        tokens[index] = picked.cpu()
        logprobs[index] = logprob.gather(-1, picked[:, None])[:, 0].cpu()
    return tokens.tolist(), logprobs.tolist()


def _truncated(scaled: torch.Tensor, top_k: int, top_p: float) -> torch.Tensor:
    """Top-k, then top-p (the token that crosses ``top_p`` stays), as -inf logits, per row."""
    if 0 < top_k < scaled.shape[-1]:
        kth = torch.topk(scaled, top_k, dim=-1).values[:, -1:]
        scaled = scaled.masked_fill(scaled < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(scaled, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        remove = probs.cumsum(-1) - probs > top_p
        scaled = scaled.scatter(-1, order, sorted_logits.masked_fill(remove, float("-inf")))
    return scaled


def _inverse_cdf(probs: torch.Tensor, generators: list[torch.Generator | None]) -> torch.Tensor:
    """One draw per row: the first token whose cumulative probability exceeds a uniform."""
    uniforms = torch.rand(len(generators))  # unseeded rows: the global generator
    for i, generator in enumerate(generators):
        if generator is not None:
            uniforms[i] = torch.rand(1, generator=generator)[0]
    cdf = probs.cumsum(-1)
    targets = (uniforms.to(probs.device) * cdf[:, -1])[:, None]  # scaled: fp32 sums fall short of 1
    # right=True skips tokens of probability 0 (their CDF equals the one before).
    return torch.searchsorted(cdf, targets, right=True)[:, 0].clamp(max=probs.shape[-1] - 1)


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


@dataclass
class _Decode:
    """The decode batch: the rows still generating, their KV cache, mask and last positions."""

    rows: list[Row]
    cache: Any
    mask: torch.Tensor
    last_pos: torch.Tensor
    logits: torch.Tensor

    def keep(self, alive: list[int]) -> None:
        """Drop finished rows from the batch (their cache rows too): later steps skip them."""
        index = torch.tensor(alive, device=self.mask.device)
        self.rows = [self.rows[i] for i in alive]
        self.cache.batch_select_indices(index)
        self.mask, self.last_pos, self.logits = self.mask[index], self.last_pos[index], self.logits[index]


def _prefill(model: Any, rows: list[Row], pad_id: int, device: str, mixer: Any = None) -> _Decode:
    """One forward over each distinct prompt (left padded, so every next token lands in the last
    column), its cache and last logits then repeated for every row that shares the prompt
    (and the adapter, in a mixed-adapter batch)."""
    from tinkerplug_local.mixed import runs

    distinct: dict[tuple[Any, tuple[int, ...]], int] = {}
    source = [distinct.setdefault((r.adapter, tuple(r.prompt)), len(distinct)) for r in rows]
    prompts = [prompt for _, prompt in distinct]
    if mixer is not None:
        mixer.set(0, runs([adapter for adapter, _ in distinct]))
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for i, prompt in enumerate(prompts):
        ids[i, width - len(prompt):] = torch.tensor(prompt)
        mask[i, width - len(prompt):] = 1
    ids, mask = ids.to(device), mask.to(device)
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    out = model(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=True, **_last_logits_only(model))
    state = _Decode(list(rows), out.past_key_values, mask, positions[:, -1], out.logits[:, -1, :])
    if source != list(range(len(prompts))):
        index = torch.tensor(source, device=mask.device)
        state.cache.batch_select_indices(index)
        state.mask, state.last_pos, state.logits = mask[index], state.last_pos[index], state.logits[index]
    return state


def _record(rows: list[Row], tokens: list[int], logprobs: list[float], tokenizer: Any) -> list[int]:
    """Append each row's new token; mark rows that stopped; the positions of those still going."""
    alive = []
    for i, (row, token, logprob) in enumerate(zip(rows, tokens, logprobs)):
        row.tokens.append(token)
        row.logprobs.append(logprob)
        if token in row.stop_ids or _stopped_by_string(row, tokenizer):
            row.done, row.stop_reason = True, "stop"
        elif len(row.tokens) >= row.max_tokens:
            row.done = True
        else:
            alive.append(i)
    return alive


@torch.no_grad()
def generate(model: Any, rows: list[Row], pad_id: int, tokenizer: Any, device: str, mixer: Any = None) -> None:
    """Fill in ``tokens``, ``logprobs`` and ``stop_reason`` of every row, all rows at once: one
    prefill per distinct prompt, then one decode step per token for the rows not yet done.
    With ``mixer`` (an entered ``mixed.MixedLora``; rows of one adapter next to each other)
    each row runs with its own ``adapter``."""
    from tinkerplug_local.mixed import runs

    if not rows:
        return
    state = _prefill(model, rows, pad_id, device, mixer)
    while True:
        tokens, logprobs = choose_tokens(state.logits, state.rows)
        alive = _record(state.rows, tokens, logprobs, tokenizer)
        if not alive:
            return
        if len(alive) < len(state.rows):
            state.keep(alive)
        next_ids = torch.tensor([[tokens[i]] for i in alive], dtype=torch.long, device=device)
        state.mask = torch.cat([state.mask, torch.ones_like(state.mask[:, :1])], dim=1)
        state.last_pos = state.last_pos + 1
        if mixer is not None:  # finished rows left: the segments shrink with them
            mixer.set(0, runs([row.adapter for row in state.rows]))
        out = model(
            input_ids=next_ids, attention_mask=state.mask, position_ids=state.last_pos[:, None],
            past_key_values=state.cache, use_cache=True,
        )
        state.cache, state.logits = out.past_key_values, out.logits[:, -1, :]


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


def batched_prompt_logprobs(
    model: Any, prompts: list[list[int]], last_ns: list[int | None], device: str, pad_id: int, options: Any = None,
    mixed: tuple[Any, list[Any]] | None = None,
) -> list[list[float | None]]:
    """``prompt_logprobs`` of many prompts in one ``microbatch_logprobs`` call (the layout it
    picks: one padded batch for short prompts), equal to each alone up to fp32 rounding.
    ``mixed``: (entered ``MixedLora``, each prompt's adapter)."""
    from tinkerplug_local.forward import microbatch_logprobs

    out: list[list[float | None]] = [[None] * len(p) for p in prompts]
    scored = [i for i, p in enumerate(prompts) if len(p) > 1]
    tokens = [prompts[i][:-1] for i in scored]
    targets = [torch.tensor(prompts[i][1:], dtype=torch.long) for i in scored]
    mix = (mixed[0], [mixed[1][i] for i in scored]) if mixed else None
    batches = microbatch_logprobs(model, tokens, targets, device, pad_id, grad=False, options=options, mixed=mix)
    for batch in batches if scored else []:
        for k, lp in zip(batch.indices, batch.logprobs):
            i = scored[k]
            n, last_n = len(prompts[i]), last_ns[i]
            first = n - min(n - 1, n if last_n is None else last_n)
            out[i][1:] = lp.float().cpu().tolist()
            out[i][:first] = [None] * first
    return out
