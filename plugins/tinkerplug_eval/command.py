"""``tinkerplug eval RUN_DIR [--step N] [--task FILE@TASK] [--set KEY=VALUE] [-p FILE|no:NAME]``."""

from __future__ import annotations

import sys
from pathlib import Path

import click


@click.command("eval")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--step", type=int, default=None, help="Checkpoint step (default: the last checkpoint).")
@click.option("--task", "tasks", multiple=True, metavar="FILE@TASK", help="Run these Inspect tasks instead of the run's evaluators (repeatable).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a key of the run's config, e.g. --set heldout.limit=8.")
@click.option("-p", "plugin_options", multiple=True, metavar="FILE|no:NAME", help="Load a plugin file (e.g. an evaluator), or disable a plugin with no:NAME.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON instead of a table.")
def eval_command(
    run_dir: Path, step: int | None, tasks: tuple[str, ...], overrides: tuple[str, ...],
    plugin_options: tuple[str, ...], as_json: bool,
) -> None:
    """Evaluate a checkpoint of RUN_DIR without training; write RUN_DIR/evals/step-N.json."""
    import asyncio
    import json

    from tinkerplug_eval.runner import evaluate_checkpoint, print_table

    result = asyncio.run(evaluate_checkpoint(run_dir, step, tasks, overrides, plugin_options))
    if as_json:
        click.echo(json.dumps(result.metrics, indent=2, sort_keys=True))
    else:
        print_table(result)
    if result.failed:
        sys.exit(3)
