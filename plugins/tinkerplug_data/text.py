"""Plain-text records (``{"text": ...}``): tokenized as is, loss on every token.

The text is encoded with the model's own special tokens (a BOS where the tokenizer adds one)
and ends with EOS, as TRL does for language-modeling data sets, so the model also learns to
stop. No chat template: a text record is not a conversation.
"""

from __future__ import annotations

from typing import Any


def text_tokens(text: str, tokenizer: Any) -> list[int]:
    tokens = list(tokenizer.encode(text, add_special_tokens=True))
    eos = getattr(tokenizer, "eos_token_id", None)
    if eos is not None and (not tokens or tokens[-1] != eos):
        tokens.append(int(eos))
    return tokens


def text_datum(text: str, tokenizer: Any) -> Any:
    """A datum predicting every token of ``text`` from the ones before it (weights 1)."""
    from tinker import types

    tokens = text_tokens(text, tokenizer)
    inputs, targets = tokens[:-1], tokens[1:]
    weights = [1.0] * len(targets)
    if not targets:  # one token, nothing to predict: a zero-weight datum, counted as untrained
        inputs, targets, weights = tokens, tokens, [0.0] * len(tokens)
    return types.Datum(
        model_input=types.ModelInput.from_ints(inputs),
        loss_fn_inputs={
            "target_tokens": types.TensorData(data=targets, dtype="int64", shape=[len(targets)]),
            "weights": types.TensorData(data=weights, dtype="float32", shape=[len(weights)]),
        },
    )
