"""Exact match on the held-out set: the reply to each record's last user turn, sampled from the
sampler weights, parsed by the renderer, compared with the record's last assistant message."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import tinkerplug
from tinkerplug.data import Records
from tinkerplug.errors import DataError

if TYPE_CHECKING:
    from tinkerplug_heldout.settings import HeldoutSettings


@tinkerplug.hookimpl
def register_config_sections(register: Any) -> None:
    from tinkerplug_heldout.settings import HeldoutSettings

    register("heldout", HeldoutSettings)


_cases: dict[str, list[tuple[list[dict[str, Any]], str]]] = {}  # by the records' fingerprint


def _load(records: Records, path: str) -> list[tuple[list[dict[str, Any]], str]]:
    """(prompt messages, expected reply) per record; read once per content, not per eval."""
    key = records.fingerprint()
    if key not in _cases:
        cases = []
        for index in range(len(records)):
            record = records[index]
            if "messages" not in record:  # a text record has no reply to match (the nll evaluator scores it)
                continue
            messages = record["messages"]
            if messages[-1]["role"] != "assistant":
                raise DataError(f"{records.where(index)}: the last message must be the assistant's expected reply")
            cases.append((messages[:-1], str(messages[-1]["content"]).strip()))
        _cases[key] = cases
    return _cases[key]


@tinkerplug.hookimpl
async def evaluate(context: Any) -> dict[str, float] | None:
    settings: HeldoutSettings = context.config.section("heldout")
    source = context.config.data.heldout_source()
    if not settings.enabled or source is None:
        return None
    import asyncio

    from tinker import types
    from tinker_cookbook.renderers import get_text_content

    cases = _load(context.plugins.load_records(source, context.config), source.path)[: settings.limit]
    if not cases:
        return None
    renderer = context.renderer
    params = types.SamplingParams(
        max_tokens=settings.max_tokens, temperature=settings.temperature, stop=renderer.get_stop_sequences(), seed=0
    )
    # Submit every prompt before awaiting any: the backend batches them.
    futures = [
        context.sampling_client.sample(renderer.build_generation_prompt(prompt), 1, params)
        for prompt, _ in cases
    ]
    responses = await asyncio.gather(*(f.result_async() for f in futures))
    exact = parsed = 0
    for (_, expected), response in zip(cases, responses):
        message, ok = renderer.parse_response(response.sequences[0].tokens)
        parsed += bool(ok)
        exact += get_text_content(message).strip() == expected
    n = len(cases)
    return {"heldout/exact_match": exact / n, "heldout/format_ok": parsed / n, "heldout/n": float(n)}
