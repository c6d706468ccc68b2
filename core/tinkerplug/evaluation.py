"""The eval step: every evaluator on the weights of one step, each on its own.

Used by the training loop (step 0, every ``eval_every`` steps, the end) and by commands that
evaluate a saved checkpoint without training (``evaluate_checkpoint``).
"""

from __future__ import annotations

import inspect
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from tinkerplug.backend_calls import wait_result
from tinkerplug.hook_types import EvalContext
from tinkerplug.errors import PluginError
from tinkerplug.plugins import hook_error

if TYPE_CHECKING:
    from tinkerplug.hook_types import CheckpointRecord, RunContext
    from tinkerplug.plugins import Plugins


TRAINING_GOES_ON = 'training continues; eval_errors = "raise" stops it'


async def run_evaluators(context: EvalContext, plugins: Plugins, after_error: str = TRAINING_GOES_ON) -> dict[str, float]:
    """Call every ``evaluate`` implementation with ``context``, one after another; return
    ``eval/<name>/<metric>`` values and ``time/eval/<plugin>_s``.

    An evaluator that raises is reported by plugin name (``on_message`` warning, ending with
    ``after_error``: what happens next) and the others still run, unless
    ``eval_errors = "raise"``, which stops with its error.
    """
    config = context.config
    merged: dict[str, float] = {}
    for name, call in plugins.evaluators():
        started = time.perf_counter()
        try:
            value = call(context=context)
            if inspect.isawaitable(value):
                value = await value
        except Exception as exc:  # noqa: BLE001 - reported by plugin name below
            error = hook_error(name, "evaluate", exc)
            if config.eval_errors == "raise":
                raise error from exc
            plugins.warn(config, f"step {context.step}: {error.message} ({after_error})")
            continue
        for key, metric in (value or {}).items():
            merged[f"eval/{key}"] = float(metric)
        merged[f"time/eval/{name}_s"] = time.perf_counter() - started
    return merged


def eval_context_for_step(run: RunContext, step: int) -> EvalContext:
    """The context of the evals after ``step`` updates in a training run: sampler weights are
    saved (``eval-STEP``) and a sampling client opened on first access only."""

    def open_sampler() -> tuple[str, Any]:
        saved = wait_result(run.training_client.save_weights_for_sampler(f"eval-{step:06d}"))
        return saved.path, wait_result(run.service_client.create_sampling_client(model_path=saved.path))

    return EvalContext(
        step=step, renderer=run.renderer, tokenizer=run.tokenizer, config=run.config, run_dir=run.run_dir,
        open_sampler=open_sampler, training_client=run.training_client, plugins=run.plugins,
    )


def sampler_opener(service: Any, sampler_path: str) -> Callable[[], tuple[str, Any]]:
    """``open_sampler`` for weights that are already saved (a checkpoint's sampler weights)."""
    return lambda: (sampler_path, wait_result(service.create_sampling_client(model_path=sampler_path)))


async def evaluate_checkpoint(
    run_dir: Path,
    step: int | None = None,
    overrides: tuple[str, ...] = (),
    plugin_options: tuple[str, ...] = (),
    only: set[str] | None = None,
    only_table: str | None = None,
) -> tuple[CheckpointRecord, dict[str, float]]:
    """Run every evaluator (or those of the plugins named in ``only``, or that of the plugin
    that owns the config table ``only_table``) on checkpoint ``step`` of ``run_dir``
    (default: the last one) without training; return the checkpoint and the metrics (as
    ``run_evaluators``).

    The run's own config (``config.json``, plus ``--set`` ``overrides``) and the installed
    plugins (plus ``-p`` ``plugin_options``) are used; the sampling client is opened on the
    checkpoint's sampler weights, the training client on its state only when an evaluator
    uses it (``forward``-based evaluators; on Tinker it is a new training session).
    """
    from tinkerplug.saved import open_checkpoint

    saved = open_checkpoint(run_dir, step, overrides, plugin_options)
    try:
        context = EvalContext(
            step=saved.record.step, renderer=saved.renderer, tokenizer=saved.tokenizer, config=saved.config,
            run_dir=saved.run_dir, open_sampler=lambda: (saved.record.sampler_path, saved.sampling_client),
            training_client=_OnFirstUse(lambda: saved.training_client), plugins=saved.plugins,
        )
        if only_table is not None:
            only = {table_owner(saved.plugins, only_table)}
        plugins = saved.plugins if only is None else _OnlyEvaluators(saved.plugins, only)
        after = "the other evaluators still run"
        return saved.record, await run_evaluators(context, plugins, after)  # type: ignore[arg-type]
    finally:
        saved.close()


def table_owner(plugins: Plugins, table: str) -> str:
    """The plugin that registered config table ``[table]`` (a command that drives one
    evaluator through its table finds it so, not by a plugin name)."""
    from tinkerplug.assemble import plugin_schema

    owner = plugin_schema(plugins).owners.get(table)
    if owner is None:
        raise PluginError(
            f"no plugin registers the [{table}] config table{plugins.disabled_note()}",
            hint=f"re-enable or install the plugin that provides [{table}]",
        )
    return owner


class _OnFirstUse:
    """Stands for an object made on first attribute access."""

    def __init__(self, make: Callable[[], Any]):
        self._make, self._value = make, None

    def __getattr__(self, name: str) -> Any:
        if self._value is None:
            self._value = self._make()
        return getattr(self._value, name)


class _OnlyEvaluators:
    """The plugins, with ``evaluators()`` narrowed to some plugins' (``eval --task``)."""

    def __init__(self, plugins: Plugins, names: set[str]):
        self._plugins, self._names = plugins, names

    def evaluators(self) -> list[tuple[str, Callable[..., Any]]]:
        return [(name, call) for name, call in self._plugins.evaluators() if name in self._names]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._plugins, name)
