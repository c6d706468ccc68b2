"""The ``nll`` evaluator: held-out loss with ``forward`` on the training client (no sampling).

The held-out records are rendered like training data (same renderer, ``train_on_what`` and
``max_length``, weights 0/1), sent in batches of ``[nll] batch_size`` with every request
submitted before any is awaited, and summed: ``eval/nll/loss`` (mean NLL per trained token:
TRL's ``eval_loss``, the cookbook's ``test/nll``), ``eval/nll/bpb`` and ``eval/nll/tokens``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import tinkerplug
from tinkerplug.errors import DataError
from tinkerplug_nll.loss import NllTotals, datum_totals

if TYPE_CHECKING:
    from tinkerplug_nll.settings import NllSettings

_cache: dict[tuple[Any, ...], list[Any]] = {}


@tinkerplug.hookimpl
def register_config_sections(register: Any) -> None:
    from tinkerplug_nll.settings import NllSettings

    register("nll", NllSettings)


def heldout_source(config: Any) -> Any:
    """``[nll] data`` (relative to the config file, or to the current directory when given
    with ``--set``), else ``data.heldout``; None when neither."""
    from tinkerplug.data import DataSource

    settings: NllSettings = config.section("nll")
    if settings.data is None:
        return config.data.heldout_source()
    path = settings.data
    if ":" not in path.split("/")[0] and not Path(path).expanduser().is_absolute():
        path = str((config.base_dir("nll.data") / Path(path).expanduser()).resolve())
    return DataSource(path=path, role="heldout", format=settings.format, split=settings.split)


@tinkerplug.hookimpl
async def evaluate(context: Any) -> dict[str, float] | None:
    settings: NllSettings = context.config.section("nll")
    source = heldout_source(context.config)
    if not settings.enabled or source is None or context.training_client is None:
        return None
    data = rendered(context, source, settings)
    totals = await forward_totals(context.training_client, data, settings.batch_size, context.tokenizer)
    return {**totals.metrics("nll"), "nll/examples": float(len(data))}


def rendered(context: Any, source: Any, settings: NllSettings) -> list[Any]:
    """The held-out records as data with 0/1 weights, truncated to ``max_length`` (cached:
    the same records are evaluated at every eval step)."""
    config, plugins = context.config, context.plugins
    records = plugins.load_records(source, config)
    key = (source, records.fingerprint(), settings.limit, config.max_length, config.train_on_what, id(context.renderer))
    if key not in _cache:
        count = len(records) if settings.limit is None else min(settings.limit, len(records))
        data = [_datum(plugins, records, i, context.renderer, config) for i in range(count)]
        if not data:
            raise DataError(f"no held-out record in {source.path} has a token to score (train_on_what = {config.train_on_what!r})")
        if len(_cache) >= 4:
            _cache.pop(next(iter(_cache)))
        _cache[key] = data
    return _cache[key]


def _datum(plugins: Any, records: Any, index: int, renderer: Any, config: Any) -> Any:
    from tinker import types

    datum = plugins.render_example(records[index], renderer, config)
    n = min(datum.model_input.length, config.max_length)
    targets = datum.loss_fn_inputs["target_tokens"].tolist()[:n]
    weights = [1.0 if w > 0 else 0.0 for w in datum.loss_fn_inputs["weights"].tolist()[:n]]
    return types.Datum(
        model_input=types.ModelInput.from_ints(datum.model_input.to_ints()[:n]),
        loss_fn_inputs={
            "target_tokens": types.TensorData(data=targets, dtype="int64", shape=[n]),
            "weights": types.TensorData(data=weights, dtype="float32", shape=[n]),
        },
    )


async def forward_totals(training_client: Any, data: list[Any], batch_size: int, tokenizer: Any) -> NllTotals:
    """Forward every batch (all submitted first: requests run in order, the backend batches),
    then sum the totals."""
    batches = [data[i : i + batch_size] for i in range(0, len(data), batch_size)]
    futures = [training_client.forward(batch, "cross_entropy") for batch in batches]
    totals = NllTotals()
    for batch, future in zip(batches, futures):
        output = await future.result_async() if hasattr(future, "result_async") else future
        for datum, out in zip(batch, output.loss_fn_outputs):
            totals.add(
                datum_totals(
                    datum.loss_fn_inputs["target_tokens"].tolist(),
                    datum.loss_fn_inputs["weights"].tolist(),
                    out["logprobs"].tolist(),
                    tokenizer,
                )
            )
    return totals
