"""How the datums of a request are laid out for the model: packed rows, or padded length groups.

A packed row concatenates datums with position ids restarting at 0 for each; transformers then
builds attention that never crosses a datum boundary (a block-diagonal mask for sdpa/eager,
varlen for flash-attention). No token is padding. On kernels without varlen the mask makes
attention quadratic in the row's length, so rows there stay short (``MASKED_ROW_TOKENS``): a
datum longer than that runs alone, with no mask at all (the causal fast path).

Datums of equal length (synthetic data, fixed-length chunks) run as plain ``(B, L)`` batches
instead: no padding, no mask, one call (measured: ~20 % faster than a masked packed row on
tiny models).

Datums of nearly equal length (RL groups: one prompt, short completions) can also run as
right-padded ``(B, L)`` batches with no mask: causal attention never reaches the pads at the end
of a row, so every real token sees exactly what it would alone (the fast causal path, and pads
never reach the LM head). ``choose_layout`` prices both layouts with ``layout_cost`` and takes
the cheaper: many short datums gain most from sharing one call (64 RL datums of ~30 tokens:
nine packed calls cost twice one padded batch, 2026-12-06).

The padded layout is also the fallback for models whose attention does not follow position ids:
datums sorted by length so that each microbatch pads little.
"""

from __future__ import annotations

from typing import Any

# Measured on 2 CPU cores (hidden 256): a 400-token datum alone costs the same per token as in
# a batch; two packed in one 800-token masked row cost ~35 % more. Short datums still gain from
# sharing one call.
MASKED_ROW_TOKENS = 512
VARLEN_ATTENTION = ("flash_attention_2", "flash_attention_3", "kernels-community/flash-attn")

# The layout cost model, in units of one token's decoder forward + backward (2 CPU cores,
# tiny-chat and the real_scale shape, 2026-12-06): a model call costs CALL_TOKENS on top of its
# tokens; attention adds N / MASKED_ATTENTION per token of an N-token masked packed row (two
# 400-token datums in one row: +35 %), and half that per token of a causal (unmasked) row.
CALL_TOKENS = 256
MASKED_ATTENTION = 2300
# Padded batches are considered only when every datum is this short (RL and DPO steps): there
# the calls, not attention or padding, set the cost. Longer data (SFT at real_scale.py's
# 36-762 tokens) keeps the packed layout measured for it.
SHORT_DATUM_TOKENS = 128


def layout_cost(groups: list[list[int]], lengths: list[int], padded: bool) -> float:
    """Estimated cost of running ``groups``: padded ``(B, L)`` batches or packed rows."""
    total = 0.0
    for group in groups:
        widths = [lengths[i] for i in group]
        if padded or len(group) == 1:
            width = max(widths)
            total += CALL_TOKENS + len(group) * width * (1 + width / (2 * MASKED_ATTENTION))
        else:
            n = sum(widths)
            total += CALL_TOKENS + n * (1 + n / MASKED_ATTENTION)
    return total


def padded_batches(lengths: list[int], max_tokens: int) -> list[list[int]]:
    """Datum indices per right-padded batch: sorted by length, a datum joins the batch before it
    when the padding that adds costs less than a call of its own (``rows x width <= max_tokens``)."""
    groups: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        if groups:
            rows, width = len(groups[-1]), lengths[groups[-1][-1]]
            fits = lengths[i] * (rows + 1) <= max_tokens
            if fits and rows * (lengths[i] - width) < CALL_TOKENS:
                groups[-1].append(i)
                continue
        groups.append([i])
    return groups


def packed_rows(lengths: list[int], row_tokens: int) -> list[list[int]]:
    """Datum indices per row, in request order; a row holds at most ``row_tokens`` tokens
    unless a single datum is longer."""
    rows: list[list[int]] = []
    used = 0
    for i, n in enumerate(lengths):
        if rows and rows[-1] and used + n <= row_tokens:
            rows[-1].append(i)
            used += n
        else:
            rows.append([i])
            used = n
    return rows


def equal_length_batches(lengths: list[int], max_tokens: int) -> tuple[list[list[int]], list[int]]:
    """Datums that share their length with others, as ``(B, L)`` batches that need neither
    padding nor a mask (``B x L <= max_tokens``), and the indices of the rest."""
    by_length: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        by_length.setdefault(n, []).append(i)
    batches, rest = [], []
    for n, indices in by_length.items():
        if len(indices) < 2:
            rest += indices
            continue
        per_batch = max(1, max_tokens // max(n, 1))
        batches += [indices[k : k + per_batch] for k in range(0, len(indices), per_batch)]
    return batches, sorted(rest)


def length_groups(lengths: list[int], max_tokens: int) -> list[list[int]]:
    """Datum indices per padded microbatch: sorted by length, ``rows x width <= max_tokens``."""
    groups: list[list[int]] = []
    for i in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        # Ascending order: the new datum is the widest of its group.
        if groups and lengths[i] * (len(groups[-1]) + 1) <= max_tokens:
            groups[-1].append(i)
        else:
            groups.append([i])
    return groups


def packed_inputs(tokens: list[list[int]], row: list[int]) -> tuple[Any, Any]:
    """``input_ids`` and ``position_ids`` (each ``(1, N)``) of one packed row."""
    import numpy as np
    import torch

    ids = np.concatenate([np.asarray(tokens[i], dtype=np.int64) for i in row])
    positions = np.concatenate([np.arange(len(tokens[i]), dtype=np.int64) for i in row])
    return torch.from_numpy(ids)[None], torch.from_numpy(positions)[None]


def padded_inputs(tokens: list[list[int]], group: list[int], pad_id: int) -> tuple[Any, Any]:
    """Right-padded ids and attention mask (filled in numpy: ~6x cheaper than per-row writes)."""
    import numpy as np
    import torch

    width = max(len(tokens[i]) for i in group)
    ids = np.full((len(group), width), pad_id, dtype=np.int64)
    mask = np.zeros((len(group), width), dtype=np.int64)
    for row, i in enumerate(group):
        ids[row, : len(tokens[i])] = tokens[i]
        mask[row, : len(tokens[i])] = 1
    return torch.from_numpy(ids), torch.from_numpy(mask)


def shared_positions(tokens: list[list[int]], targets: Any) -> tuple[list[int], list[int]] | None:
    """Positions of the concatenated datums that repeat an earlier one: the same tokens up to
    and including it (so the same hidden state) and the same targets (RL groups repeat their
    prompt once per sample). Returns the rows to compute and, per position, its row among them;
    None when nothing repeats."""
    prefixes: dict[tuple[int, int], int] = {}  # (prefix id, next token) -> prefix id: a trie
    first: dict[tuple[int, Any], int] = {}
    rows: list[int] = []
    inverse: list[int] = []
    flat = [tuple(t) for t in targets.tolist()]
    position = 0
    for datum in tokens:
        prefix = -1
        for token in datum:
            prefix = prefixes.setdefault((prefix, token), len(prefixes))
            row = first.setdefault((prefix, flat[position]), len(rows))
            if row == len(rows):
                rows.append(position)
            inverse.append(row)
            position += 1
    return (rows, inverse) if len(rows) < position else None


def stacked_targets(targets: list[Any]) -> Any:
    """``(N, K)`` targets of concatenated datums; ``(T,)`` becomes ``(T, 1)``, narrower K are
    padded with token 0 (their extra columns are cut off again by ``split_logprobs``)."""
    import torch

    as_2d = [t[:, None] if t.dim() == 1 else t for t in targets]
    k = max(t.shape[1] for t in as_2d)
    return torch.cat([torch.nn.functional.pad(t, (0, k - t.shape[1])) for t in as_2d])


def split_logprobs(logprobs: Any, targets: list[Any]) -> list[Any]:
    """Per-datum logprobs, each shaped like its targets, from the ``(N, K)`` result."""
    out, start = [], 0
    for t in targets:
        piece = logprobs[start : start + t.shape[0]]
        out.append(piece[:, 0] if t.dim() == 1 else piece[:, : t.shape[1]])
        start += t.shape[0]
    return out
