"""Hook implementations: the ``[inspect]`` table, a fail-fast check of its task files, and the
``inspect`` evaluator."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import tinkerplug

if TYPE_CHECKING:
    from tinkerplug_inspect.settings import InspectSettings

LOG_SUBDIR = "inspect"  # Inspect's logs: RUN_DIR/inspect/*.eval


@tinkerplug.hookimpl
def register_config_sections(register: Any) -> None:
    from tinkerplug_inspect.settings import InspectSettings

    register("inspect", InspectSettings)


def task_specs(config: Any) -> list[str]:
    """The tasks Inspect loads: file paths resolved against the config file's directory (the
    current directory for tasks given with ``--set``)."""
    from tinkerplug_inspect.tasks import resolve_task_spec

    settings: InspectSettings = config.section("inspect")
    if not settings.enabled or not settings.tasks:
        return []
    return [resolve_task_spec(spec, config.base_dir("inspect.tasks")) for spec in settings.tasks]


@tinkerplug.hookimpl
def on_run_start(run: Any) -> None:
    task_specs(run.config)  # a missing task file stops the run now, not at every eval


@tinkerplug.hookimpl
async def evaluate(context: Any) -> dict[str, float] | None:
    specs = task_specs(context.config)
    if not specs:
        return None
    from tinkerplug_inspect.runner import run_tasks

    settings: InspectSettings = context.config.section("inspect")
    return await run_tasks(
        specs,
        sampling_client=context.sampling_client,
        renderer=context.renderer,
        model_name=context.config.base_model,
        log_dir=Path(context.run_dir) / LOG_SUBDIR,
        limit=settings.limit,
        temperature=settings.temperature,
        max_tokens=settings.max_tokens,
        seed=context.config.seed,
        max_connections=settings.max_connections,
        task_args=settings.task_args,
        metadata={"step": context.step, "sampler_path": context.sampler_path, "base_model": context.config.base_model},
        tags=[f"step-{context.step}"],
    )
