"""Mean NLL per trained token and bits per byte from ``forward`` outputs.

``nll`` sums ``-logprob * weight`` over target tokens, exactly the service's ``cross_entropy``
sum; dividing by the weight sum gives the mean NLL per trained token (what training logs as
``train/loss``). Bits per byte divide the same sum, in bits, by the UTF-8 bytes of the trained
text, which makes models with different tokenizers comparable.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence


@dataclass
class NllTotals:
    nll: float = 0.0  # nats, summed over trained tokens
    tokens: float = 0.0  # sum of weights (trained tokens when weights are 0/1)
    bytes: int = 0  # UTF-8 bytes of the trained text

    def add(self, other: "NllTotals") -> None:
        self.nll += other.nll
        self.tokens += other.tokens
        self.bytes += other.bytes

    def metrics(self, prefix: str = "nll") -> dict[str, float]:
        return {
            f"{prefix}/loss": self.nll / self.tokens if self.tokens else float("nan"),
            f"{prefix}/bpb": self.nll / (math.log(2) * self.bytes) if self.bytes else float("nan"),
            f"{prefix}/tokens": float(self.tokens),
        }


def datum_totals(targets: Sequence[int], weights: Sequence[float], logprobs: Sequence[float], tokenizer: Any) -> NllTotals:
    """Totals of one datum: its target tokens, weights and the model's logprobs of them."""
    nll = sum(-float(lp) * float(w) for lp, w in zip(logprobs, weights) if w)
    return NllTotals(nll=nll, tokens=float(sum(weights)), bytes=trained_bytes(targets, weights, tokenizer))


def trained_bytes(targets: Sequence[int], weights: Sequence[float], tokenizer: Any) -> int:
    """UTF-8 bytes of the trained tokens, decoded span by span (a character split over two
    tokens is counted once, not as two replacement characters)."""
    total, span = 0, []
    for token, weight in zip(list(targets) + [None], list(weights) + [0.0]):
        if weight and token is not None:
            span.append(int(token))
        elif span:
            total += len(tokenizer.decode(span, skip_special_tokens=True).encode("utf-8"))
            span = []
    return total
