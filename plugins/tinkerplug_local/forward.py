"""Token logprobs of a list of datums, microbatch by microbatch: the one place the local backend
runs the model for training and ``forward``.

``microbatch_logprobs`` yields each microbatch's per-datum target logprobs; the caller turns
them into a loss (``losses.py``) and calls ``backward`` before asking for the next one, so only
one microbatch's activations are alive at a time. Targets are ``(T,)`` token ids (one target per
position) or ``(T, K)`` (K candidate targets per position, as off-policy distillation sends);
logprobs come back in the same shape.

The decoder runs on packed rows (``packing.py``: no padding) and the LM head on a few tokens at
a time (``lm_head.py``: the batch's logits never exist). Both are checked once per model
against a plain forward (``_check_model``); a model that fails a check gets padded length
groups, or as a last resort the plain forward with full logits.
"""

from __future__ import annotations

import contextlib
import weakref
from dataclasses import dataclass
from typing import Any, Iterator

from tinkerplug_local import packing
from tinkerplug_local.mixed import runs
from tinkerplug_local.packing import (
    MASKED_ROW_TOKENS,
    SHORT_DATUM_TOKENS,
    VARLEN_ATTENTION,
    equal_length_batches,
    layout_cost,
    length_groups,
    packed_inputs,
    padded_inputs,
    padded_batches,
    packed_rows,
    shared_positions,
    split_logprobs,
    stacked_targets,
)


@dataclass(frozen=True)
class ForwardOptions:
    """How the model runs; none of these change what is computed beyond float rounding."""

    gradient_checkpointing: bool = False  # recompute each layer in backward: less memory, ~30 % more time
    microbatch_tokens: int = 0  # 0: chosen from the device's memory (memory.py)


@dataclass
class Microbatch:
    indices: list[int]  # positions of these datums in the request
    logprobs: list[Any]  # per datum: a tensor shaped like its target_tokens


@dataclass
class _Parts:
    causal: Any  # the transformers *ForCausalLM (LoRA layers injected, when an adapter exists)
    decoder: Any  # its body: hidden states out
    head: Any  # its output embedding (maybe PEFT-wrapped)
    adapter_off: Any  # context manager factory: no adapter (the base model), or a no-op
    softcap: float | None
    packing: bool = True  # attention follows position ids
    split: bool = True  # decoder + head reproduce the model's logits
    token_caps: tuple[int, int] = (0, 0)  # without, with gradient checkpointing


_checked: "weakref.WeakKeyDictionary[Any, tuple[bool, bool, tuple[int, int]]]" = weakref.WeakKeyDictionary()


def microbatch_logprobs(
    model: Any,
    tokens: list[list[int]],
    targets: list[Any],
    device: str,
    pad_id: int,
    grad: bool,
    options: ForwardOptions | None = None,
    mixed: tuple[Any, list[Any]] | None = None,
) -> Iterator[Microbatch]:
    """Run ``model`` on every token list; yield target logprobs a microbatch at a time.

    ``targets[i]`` is an int64 tensor of shape ``(len(tokens[i]),)`` or ``(len(tokens[i]), K)``.
    With ``grad`` the logprobs carry the autograd graph back to the LoRA weights.
    ``mixed``: ``(MixedLora, adapter of each datum)`` (mixed.py), entered by the caller: each
    datum runs with its own adapter; ``model`` is then the PeftModel (see ``can_mix``).
    """
    import torch

    from tinkerplug_local.mixed import grouped

    options = options or ForwardOptions()
    parts = _model_parts(model, device, options)
    cap = options.microbatch_tokens or parts.token_caps[options.gradient_checkpointing]
    groups, padded = _layout(parts, [len(t) for t in tokens], cap, device)
    for group in groups:
        group = grouped(group, mixed[1]) if mixed else group
        with torch.set_grad_enabled(grad), parts.adapter_off(), _autocast(device, parts.causal):
            with _checkpointing(parts.decoder, grad and options.gradient_checkpointing):
                targets_here = [targets[i].to(device) for i in group]
                rows = _group_logprobs(parts, tokens, targets_here, group, device, pad_id, padded or len(group) == 1, mixed)
        yield Microbatch(indices=group, logprobs=rows)


def can_mix(model: Any, device: str, options: ForwardOptions | None = None) -> bool:
    """Whether ``microbatch_logprobs`` can run mixed-adapter batches on ``model`` (a PeftModel):
    decoder and head run apart (the head then takes an adapter per segment) and the head is a
    (LoRA) linear layer."""
    from tinkerplug_local.lm_head import linear_head

    parts = _model_parts(model, device, options or ForwardOptions())
    return parts.split and linear_head(parts.head)


def _layout(parts: _Parts, lengths: list[int], cap: int, device: str) -> tuple[list[list[int]], bool]:
    """The datum indices of each microbatch, and whether they run as right-padded batches
    (else as packed rows; see packing.py): whichever layout the cost model finds cheaper."""
    if not (parts.split and parts.packing):
        return length_groups(lengths, cap), False
    varlen = getattr(parts.causal.config, "_attn_implementation", "") in VARLEN_ATTENTION
    row_tokens = cap if varlen or device.startswith("cuda") else min(cap, MASKED_ROW_TOKENS)
    batches, rest = equal_length_batches(lengths, cap)
    rows = [[rest[i] for i in row] for row in packed_rows([lengths[i] for i in rest], row_tokens)]
    if varlen or max(lengths, default=0) > SHORT_DATUM_TOKENS:
        return batches + rows, False
    padded = padded_batches(lengths, cap)
    if layout_cost(padded, lengths, True) >= layout_cost(batches, lengths, True) + layout_cost(rows, lengths, False):
        return batches + rows, False  # equal-length batches are padded batches with no pads
    return padded, True


def _group_logprobs(
    parts: _Parts, tokens: list[list[int]], targets: list[Any], group: list[int], device: str, pad_id: int, padded: bool,
    mixed: tuple[Any, list[Any]] | None = None,
) -> list[Any]:
    if not parts.split:
        if mixed:
            raise RuntimeError("mixed-adapter batches need the split decoder + head path (check can_mix first)")
        return _full_logits(parts.causal, tokens, targets, group, device, pad_id)
    adapters = [mixed[1][i] for i in group] if mixed else []
    lengths = [len(tokens[i]) for i in group]
    if parts.packing and (padded or len(set(lengths)) == 1):
        # Right padding with no mask: causal attention never looks ahead, so real tokens never
        # see the pads, and only real tokens' states go on to the LM head.
        ids, mask = padded_inputs(tokens, group, pad_id)
        if mixed:
            mixed[0].set(0, runs(adapters))
        hidden = parts.decoder(input_ids=ids.to(device), use_cache=False).last_hidden_state[mask.to(device).bool()]
    elif parts.packing:
        ids, positions = packed_inputs(tokens, group)
        if mixed:
            mixed[0].set(1, runs(adapters, lengths))
        out = parts.decoder(input_ids=ids.to(device), position_ids=positions.to(device), use_cache=False)
        hidden = out.last_hidden_state[0]
    else:
        ids, mask = padded_inputs(tokens, group, pad_id)
        mask = mask.to(device)
        if mixed:
            mixed[0].set(0, runs(adapters))
        out = parts.decoder(input_ids=ids.to(device), attention_mask=mask, use_cache=False)
        hidden = out.last_hidden_state[mask.bool()]  # row-major: the datums' tokens, concatenated
    if not mixed:
        return _head_logprobs(parts, hidden, [tokens[i] for i in group], targets, None)
    rows: list[Any] = []
    start = first = 0
    for adapter, count in runs(adapters):  # the head once per adapter's run of datums
        n = sum(lengths[first : first + count])
        lora = (adapter,) if adapter is not None else ()
        datums = [tokens[i] for i in group[first : first + count]]
        rows += _head_logprobs(parts, hidden[start : start + n], datums, targets[first : first + count], lora)
        start, first = start + n, first + count
    return rows


def _head_logprobs(parts: _Parts, hidden: Any, tokens: list[list[int]], targets: list[Any], lora: tuple[str, ...] | None) -> list[Any]:
    """Per-datum target logprobs from the decoder's states of ``tokens`` (concatenated);
    ``lora``: the head's adapters to apply (None: its active ones)."""
    import torch

    from tinkerplug_local.lm_head import token_logprobs

    stacked = stacked_targets(targets)
    shared = shared_positions(tokens, stacked)
    if shared is None:
        return split_logprobs(token_logprobs(hidden, parts.head, stacked, parts.softcap, lora), targets)
    # Positions with the same prefix and target (a group's shared prompt) go through the head
    # once; their gradients meet in that one row, as the parameters see the same function.
    rows, inverse = (torch.tensor(x, device=hidden.device) for x in shared)
    return split_logprobs(token_logprobs(hidden[rows], parts.head, stacked[rows], parts.softcap, lora)[inverse], targets)


def _full_logits(causal: Any, tokens: list[list[int]], targets: list[Any], group: list[int], device: str, pad_id: int) -> list[Any]:
    """The plain path: padded batch, full logits. Only for models the split path cannot run."""
    import torch

    ids, mask = padded_inputs(tokens, group, pad_id)
    logprobs = torch.log_softmax(causal(input_ids=ids.to(device), attention_mask=mask.to(device)).logits.float(), dim=-1)
    rows = []
    for row, target in enumerate(targets):
        picked = logprobs[row, : target.shape[0]]
        rows.append(picked.gather(-1, target[:, None])[:, 0] if target.dim() == 1 else picked.gather(-1, target))
    return rows


def _model_parts(model: Any, device: str, options: ForwardOptions) -> _Parts:
    unwrap = getattr(model, "unwrapped", None)  # host.py's base-only view: model plus adapter-off context
    if unwrap is not None:
        causal, adapter_off = unwrap()
    elif hasattr(model, "get_base_model"):  # a PeftModel
        causal, adapter_off = model.get_base_model(), contextlib.nullcontext
    else:
        causal, adapter_off = model, contextlib.nullcontext
    if options.gradient_checkpointing and not getattr(causal, "is_gradient_checkpointing", True):
        causal.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    decoder = getattr(causal, "base_model", None)
    head = causal.get_output_embeddings() if hasattr(causal, "get_output_embeddings") else None
    softcap = getattr(causal.config, "final_logit_softcapping", None)
    parts = _Parts(causal, decoder, head, adapter_off, softcap)
    if causal not in _checked:
        with adapter_off():
            _checked[causal] = _check_model(parts, device)
    parts.split, parts.packing, parts.token_caps = _checked[causal]
    return parts


def _check_model(parts: _Parts, device: str) -> tuple[bool, bool, tuple[int, int]]:
    """Once per model: do decoder + head give the model's logits, and does packing keep datums
    apart? Two short sequences, compared with plain forwards of each."""
    import torch

    from tinkerplug_local.memory import microbatch_token_cap

    cap = microbatch_token_cap(parts.causal, device, False), microbatch_token_cap(parts.causal, device, True)
    if parts.decoder is None or parts.decoder is parts.causal or parts.head is None:
        return False, False, cap
    vocab = int(parts.causal.config.vocab_size)
    a, b = [(7 * i + 3) % vocab for i in range(5)], [(11 * i + 5) % vocab for i in range(7)]
    with torch.no_grad(), _autocast(device, parts.causal):
        ref = [parts.causal(input_ids=torch.tensor([s], device=device), use_cache=False).logits[0].float() for s in (a, b)]
        alone = [parts.decoder(input_ids=torch.tensor([s], device=device), use_cache=False).last_hidden_state[0] for s in (a, b)]
        logits = parts.head(alone[0]).float()
        if parts.softcap:
            logits = torch.tanh(logits / parts.softcap) * parts.softcap
        split = _close(logits, ref[0])
        ids, positions = packing.packed_inputs([a, b], [0, 1])  # by module: benchmarks count the rest
        packed = parts.decoder(input_ids=ids.to(device), position_ids=positions.to(device), use_cache=False).last_hidden_state[0]
        packs = _close(packed, torch.cat(alone))
    return split, packs, cap


def _close(got: Any, want: Any) -> bool:
    tolerance = 1e-4 if want.dtype == got.dtype == __import__("torch").float32 else 3e-2
    return bool((got.float() - want.float()).abs().max() <= tolerance * (1 + want.float().abs().max()))


@contextlib.contextmanager
def _checkpointing(decoder: Any, on: bool) -> Iterator[None]:
    """transformers checkpoints a layer only in training mode; the model stays in eval mode (no
    dropout), so only the layers' own flag is switched, for this forward."""
    layers = [m for m in decoder.modules() if getattr(m, "gradient_checkpointing", False)] if on else []
    before = [layer.training for layer in layers]
    for layer in layers:
        layer.training = True
    try:
        yield
    finally:
        for layer, mode in zip(layers, before):
            layer.training = mode


def _autocast(device: str, causal: Any) -> Any:
    """bf16 matmuls on CUDA when the weights are bf16 (LoRA weights stay fp32 there)."""
    import torch

    if device.startswith("cuda") and getattr(causal, "dtype", None) == torch.bfloat16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()
