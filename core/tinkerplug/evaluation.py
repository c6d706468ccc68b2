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
from tinkerplug.context import EvalContext
from tinkerplug.plugins import hook_error

if TYPE_CHECKING:
    from tinkerplug.context import CheckpointRecord, RunContext
    from tinkerplug.plugins import Plugins


async def run_evaluators(context: EvalContext, plugins: Plugins) -> dict[str, float]:
    """Call every ``evaluate`` implementation with ``context``, one after another; return
    ``eval/<name>/<metric>`` values and ``time/eval/<plugin>_s``.

    An evaluator that raises is reported by plugin name (``on_message`` warning) and the
    others still run, unless ``eval_errors = "raise"``, which stops with its error.
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
            plugins.warn(config, f"step {context.step}: {error.message} (training continues; eval_errors = \"raise\" stops it)")
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


async def evaluate_checkpoint(run_dir: Path, step: int | None = None) -> tuple[CheckpointRecord, dict[str, float]]:
    """Run every evaluator on checkpoint ``step`` of ``run_dir`` (default: the last one)
    without training; return the checkpoint and the metrics (as ``run_evaluators``).

    The run's own config (``config.json``) and the installed plugins are used; the training
    client is loaded from the checkpoint's state (for ``forward``-based evaluators and the
    tokenizer), the sampling client from its sampler weights when an evaluator asks.
    """
    from tinkerplug.backend_calls import backend_call
    from tinkerplug.context import CheckpointRecord
    from tinkerplug.loading import load_saved_run
    from tinkerplug.rundir import pick_checkpoint, read_jsonl

    config, plugins = load_saved_run(run_dir)
    record = CheckpointRecord(**pick_checkpoint(read_jsonl(run_dir / "checkpoints.jsonl"), step, run_dir))
    service = plugins.create_service_client(config, str(run_dir))
    training_client = await backend_call(
        lambda: service.create_training_client_from_state(record.state_path),
        f"could not load the step-{record.step} checkpoint {record.state_path}",
    )
    tokenizer = training_client.get_tokenizer()
    context = EvalContext(
        step=record.step, renderer=plugins.resolve_renderer(config, tokenizer), tokenizer=tokenizer,
        config=config, run_dir=run_dir, open_sampler=sampler_opener(service, record.sampler_path),
        training_client=training_client, plugins=plugins,
    )
    return record, await run_evaluators(context, plugins)


