"""The terminal reporter: notes and warnings (``on_message``), the progress bar
(``on_run_start`` .. ``on_run_end``), eval lines (``log_metrics``), checkpoints and the
summary table. It only listens: every event reaches it through a hook."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Mapping

import tinkerplug

if TYPE_CHECKING:
    from tinkerplug_terminal.reporter import Reporter

_reporter: Reporter | None = None


def reporter(config: Any) -> Reporter:
    """The process's reporter (rich loads on first use), quiet as ``config`` says."""
    global _reporter
    if _reporter is None:
        from tinkerplug_terminal.reporter import Reporter

        _reporter = Reporter()
    try:
        _reporter.quiet = config.section("terminal").quiet
    except KeyError:  # a config built without the plugins' tables (in code, in tests)
        _reporter.quiet = False
    return _reporter


@tinkerplug.hookimpl
def register_config_sections(register: Any) -> None:
    from tinkerplug_terminal.settings import TerminalSettings

    register("terminal", TerminalSettings)


@tinkerplug.hookimpl
def on_message(text: str, level: str, config: Any) -> None:
    if level == "warning":
        reporter(config).warn(text)
    else:
        reporter(config).note(text)


@tinkerplug.hookimpl
def on_run_start(run: Any) -> None:
    reporter(run.config).start_progress(run.num_steps, run.start_step)


@tinkerplug.hookimpl
def log_metrics(step: int, metrics: Mapping[str, Any], run: Any) -> None:
    shown = reporter(run.config)
    if "train/loss" in metrics:
        shown.step(metrics)
    shown.evals(step, {k: v for k, v in metrics.items() if k.startswith("eval/")})


@tinkerplug.hookimpl
def on_checkpoint(record: Any, run: Any) -> None:
    reporter(run.config).checkpoint(record)


@tinkerplug.hookimpl
def on_run_end(run: Any, summary: Mapping[str, Any]) -> None:
    shown = reporter(run.config)
    shown.stop_progress()
    if "error" in summary:
        return  # the CLI prints the error that ended the run
    if summary.get("interrupted"):
        shown.stopped(summary["steps_done"], summary["resume_command"])
    else:
        shown.summary(summary)
