"""How many tokens one microbatch may hold: an activation budget over bytes per token.

The budget comes from the device's *total* memory (not what is free right now), so the same
machine always lays out a request the same way and a resumed run repeats its arithmetic.
"""

from __future__ import annotations

import os
from typing import Any

CPU_BUDGET_FRACTION = 0.125  # of physical RAM: this is a shared machine more often than not
CUDA_BUDGET_FRACTION = 0.5  # of what the device has beside the weights
MIN_TOKENS, MAX_TOKENS = 1024, 131072


def bytes_per_token(config: Any, element_size: int, gradient_checkpointing: bool) -> int:
    """Activation bytes one token keeps alive until backward, estimated from the config.

    Per layer a decoder keeps ~a dozen hidden-sized tensors (norms, q/k/v, attention output,
    residuals) and ~5 MLP-sized ones (gate, up, activation, product, LoRA inputs); with
    checkpointing only each layer's input stays, plus one layer's worth during recompute.
    """
    hidden = int(getattr(config, "hidden_size", 0) or 1024)
    layers = int(getattr(config, "num_hidden_layers", 0) or 1)
    mlp = int(getattr(config, "intermediate_size", 0) or 4 * hidden)
    one_layer = (12 * hidden + 5 * mlp) * element_size
    kept = layers * (2 * hidden * element_size + (0 if gradient_checkpointing else one_layer))
    return kept + one_layer + 8 * hidden * 4  # + the final norm, the head's input and its gradient


def budget_bytes(device: str, weight_bytes: int) -> int:
    if device.startswith("cuda"):
        import torch

        total = torch.cuda.get_device_properties(torch.device(device).index or 0).total_memory
        return int(max(total - weight_bytes, 1 << 30) * CUDA_BUDGET_FRACTION)
    try:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        total = 8 << 30
    return int(total * CPU_BUDGET_FRACTION)


def microbatch_token_cap(model: Any, device: str, gradient_checkpointing: bool) -> int:
    """Tokens per microbatch for ``model`` (a transformers model) on ``device``."""
    params = list(model.parameters())
    element_size = params[0].element_size() if params else 4
    weight_bytes = sum(p.numel() * p.element_size() for p in params)
    per_token = bytes_per_token(model.config, element_size, gradient_checkpointing)
    budget = budget_bytes(device, weight_bytes)
    # A packed row's attention mask is N x N bytes: keep it within a quarter of the budget.
    tokens = min(budget // per_token, int((budget / 4) ** 0.5))
    return max(MIN_TOKENS, min(MAX_TOKENS, tokens))
