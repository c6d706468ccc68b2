"""Renderers from ``tinker_cookbook.renderers``; loss only on the tokens ``train_on_what`` names."""

from __future__ import annotations

from typing import Any, Mapping

import tinkerplug
from tinkerplug.errors import ConfigError
from tinkerplug.models import model_metadata

PROBE = [{"role": "user", "content": "probe 12"}, {"role": "assistant", "content": "reply 34"}]


def recommended_renderer(base_model: str) -> str:
    meta = model_metadata(base_model)
    if meta.get("renderer"):
        return meta["renderer"]
    from tinker_cookbook import model_info

    try:
        return model_info.get_recommended_renderer_name(base_model)
    except Exception as exc:  # noqa: BLE001 - unknown to the cookbook's registry
        raise ConfigError(
            f"no known renderer for base_model {base_model!r} ({exc})",
            hint='set renderer = "..." in the config (e.g. qwen3, llama3, role_colon)',
        ) from None


@tinkerplug.hookimpl
def resolve_renderer(config: Any, tokenizer: Any) -> Any:
    from tinker_cookbook import renderers

    name = config.renderer or recommended_renderer(config.base_model)
    try:
        renderer = renderers.get_renderer(name, tokenizer)
    except (ValueError, KeyError) as exc:
        raise ConfigError(
            f"unknown renderer {name!r}: {exc}",
            hint="e.g. qwen3, qwen3_instruct, qwen3_disable_thinking, llama3, role_colon",
        ) from None
    except Exception as exc:  # noqa: BLE001
        raise ConfigError(f"renderer {name!r} does not fit base_model {config.base_model!r}: {exc}") from None
    check_fit(renderer, tokenizer, name, config.base_model)
    return renderer


def check_fit(renderer: Any, tokenizer: Any, name: str, base_model: str) -> None:
    """A renderer fits when its special tokens are single tokens of this tokenizer and a probe
    conversation renders and parses back."""
    problem = None
    try:
        model_input, weights = renderer.build_supervised_example(PROBE)
        tokens = model_input.to_ints()
        for stop in renderer.get_stop_sequences():
            if isinstance(stop, int) and (stop >= len(tokenizer) or tokenizer.encode(tokenizer.decode([stop]), add_special_tokens=False) != [stop]):
                problem = f"its stop token {stop} is not a token of this tokenizer"
        trained = [t for t, w in zip(tokens, weights.tolist()) if w > 0]
        message, ok = renderer.parse_response(trained)
        from tinker_cookbook.renderers import get_text_content

        if problem is None and (not ok or "reply 34" not in get_text_content(message)):
            problem = "a probe reply does not parse back (the chat special tokens are missing from the tokenizer?)"
    except Exception as exc:  # noqa: BLE001
        # The cookbook renderers fail deep inside (e.g. unpacking a special token that this
        # tokenizer splits in several): say what that means, keep the detail for a bug report.
        problem = f"it cannot render a probe conversation with this tokenizer (its special tokens are not tokens of this model?) [{type(exc).__name__}: {exc}]"
    if problem:
        raise ConfigError(
            f"renderer {name!r} does not fit base_model {base_model!r}: {problem}",
            hint="pick the renderer the model was trained with, or leave `renderer` unset",
        )


@tinkerplug.hookimpl
def render_example(example: Mapping[str, Any], renderer: Any, config: Any) -> Any:
    from tinker_cookbook.renderers import TrainOnWhat

    model_input, weights = renderer.build_supervised_example(
        example["messages"], train_on_what=TrainOnWhat(config.train_on_what)
    )
    # No truncation or reduction here: the loop applies max_length and loss_reduction.
    if all(type(chunk).__name__ == "EncodedTextChunk" for chunk in model_input.chunks):
        return next_token_datum(model_input.to_ints(), weights)
    # Images: the cookbook's own split (importing it loads `datasets` and pandas, ~4 s and
    # ~95 MB on 2 cores, which text-only data never needs).
    from tinker_cookbook.supervised.common import datum_from_model_input_weights

    return datum_from_model_input_weights(model_input, weights, max_length=None, reduction="none")


def next_token_datum(tokens: list[int], weights: Any) -> Any:
    """Input = every token but the last; target = the token after each input token; each
    target keeps its own weight (the renderer's weights are aligned with ``tokens``)."""
    from tinker import types

    if len(tokens) < 2:
        raise ValueError("a rendered example needs at least 2 tokens for an input/target split")
    target_weights = weights[1:].numpy() if hasattr(weights, "numpy") else weights[1:]
    return types.Datum(
        model_input=types.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={
            "target_tokens": types.TensorData(data=tokens[1:], dtype="int64", shape=[len(tokens) - 1]),
            "weights": types.TensorData(data=[float(w) for w in target_weights], dtype="float32", shape=[len(tokens) - 1]),
        },
    )
