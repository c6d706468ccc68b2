"""A run, as four phases of hook calls.

*prepare* (``prepare.py``) reads and checks every input and renders the data, writing
nothing; *open* creates and locks the run dir and writes ``config.json``, then
``on_run_start`` is called; *steps* (``steps.py``) trains, with evals and checkpoints when due;
*finish* runs the last evals, saves the final checkpoint and builds the summary.
``on_run_end`` is called from a ``finally`` for every run that opened, with
``summary["error"]`` or ``summary["interrupted"]`` when it did not get to its end.
"""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path
from typing import Any

from tinkerplug import checkpoint_refs, rundir
from tinkerplug.backend_calls import wait_result
from tinkerplug.config import RunConfig
from tinkerplug.errors import TinkerplugError
from tinkerplug.hook_types import RunContext
from tinkerplug.plugins import Plugins
from tinkerplug.prepare import AlreadyFinished, Prepared, prepare
from tinkerplug.steps import LoopState, Steps, stop_on_sigint
from tinkerplug.watchdog import watch_for_stalls


async def train(config: RunConfig, plugins: Plugins, resume_command: str | None = None) -> dict[str, Any]:
    """Run (or resume) the training ``config`` describes; return the summary. The phases,
    in order: prepare (every input checked, nothing written), open (the run dir, locked,
    with its ``config.json``), then steps and finish with ``on_run_end`` in a ``finally``."""
    command = resume_command or config.resume_command()
    with contextlib.ExitStack() as held:  # the run dir's lock, released last
        prepared = await prepare(config, plugins, command, held)
        if isinstance(prepared, AlreadyFinished):
            return prepared.summary
        open_run_dir(prepared, command, held)
        return await steps_and_finish(prepared, command)


def open_run_dir(prepared: Prepared, command: str, held: contextlib.ExitStack) -> None:
    """The open phase: the inputs are good, so only now does the run dir come into being
    (a resume holds its lock already), with its ``config.json``."""
    run_dir = prepared.run.run_dir
    if not prepared.resuming:
        held.callback(rundir.create_run_dir(run_dir, prepared.run.config.resume, command).release)
    config_file = run_dir / rundir.CONFIG_JSON
    pins = checkpoint_refs.pending_pins(run_dir)
    if not config_file.exists():
        saved = {**prepared.run_json, **({checkpoint_refs.REFERENCES: pins} if pins else {})}
        rundir.atomic_write_text(config_file, json.dumps(saved, indent=2) + "\n")


async def steps_and_finish(prepared: Prepared, command: str) -> dict[str, Any]:
    """``on_run_start``, the steps and finish phases, with one exit: ``on_run_end`` in a
    ``finally``."""
    run, plugins, config = prepared.run, prepared.run.plugins, prepared.run.config
    state = LoopState(started=time.perf_counter())
    state.last_finished = state.started
    if prepared.checkpoint is not None:
        state.checkpointed_steps.add(prepared.checkpoint.step)
    steps = Steps(run, prepared.data, prepared.executor, state)
    summary: dict[str, Any] = {}
    try:
        plugins.on_run_start(run)
        prepared.data.start(run.start_step, run.num_steps)
        warn = lambda text: plugins.warn(config, text)  # noqa: E731
        with stop_on_sigint(state, warn), watch_for_stalls(config, state, warn, command):
            interrupted = await steps.run_all()
        if not interrupted:
            await finish(steps)
        summary = make_summary(steps, interrupted, command)
        return summary
    except BaseException as exc:
        summary = make_summary(steps, isinstance(exc, KeyboardInterrupt), command)
        summary["error"] = f"{type(exc).__name__}: {exc}" if not isinstance(exc, TinkerplugError) else exc.message
        tell_how_to_resume(exc, run.run_dir, command, plugins, config)
        raise
    finally:
        prepared.data.close()
        prepared.data.report_counts(at_end=True)
        end_run(steps, summary)
        close_service(run, summary)


async def finish(steps: Steps) -> None:
    """The last evals (logged as a row of their own) and the final checkpoint."""
    run, state, num_steps = steps.run, steps.state, steps.run.num_steps
    await steps.evaluate(num_steps)
    if num_steps in state.eval_metrics:
        row = {"step": num_steps, **state.eval_metrics.pop(num_steps)}
        state.history.append(row)
        run.plugins.log_metrics(num_steps, row, run)
    if num_steps not in state.checkpointed_steps:
        await steps.checkpoint(num_steps, final=True)


def end_run(steps: Steps, summary: dict[str, Any]) -> None:
    """``on_run_end``, also on the way out of an error: a failing end hook then must not hide
    the error that stopped the run, so it is reported as a warning instead."""
    run = steps.run
    try:
        if "error" not in summary:
            run.plugins.on_run_end(run, summary)
            return
        try:
            run.plugins.on_run_end(run, summary)
        except Exception as exc:  # noqa: BLE001 - the run's own error is the one raised
            run.plugins.warn(run.config, f"while ending the run after an error: {exc}")
    finally:
        run.plugins.unregister_run_objects()


def tell_how_to_resume(exc: BaseException, run_dir: Path, command: str, plugins: Plugins, config: RunConfig) -> None:
    """A run that dies mid-way has lost nothing: say where it can pick up again."""
    last = rundir.last_checkpoint(run_dir)
    where = f"from its step-{last.step} checkpoint" if last else "from step 0 (no checkpoint yet)"
    text = f"the run stopped before its end; {where} it resumes with: {command}"
    if isinstance(exc, TinkerplugError):
        exc.hint = f"{exc.hint}\n  {text}" if exc.hint else text
    else:
        plugins.warn(config, text)


def make_summary(steps: Steps, interrupted: bool, command: str) -> dict[str, Any]:
    """What ``on_run_end`` gets and ``train`` returns: counts, timing, first/last loss and evals."""
    run, state = steps.run, steps.state
    rows = [r for r in state.history if "train/loss" in r]
    elapsed = time.perf_counter() - state.started
    summary: dict[str, Any] = {
        "run_dir": str(run.run_dir),
        "steps_run": len(rows),
        "num_steps": run.num_steps,
        "interrupted": interrupted,
        "elapsed_s": elapsed,
        "s_per_step": (rows[-1]["time/elapsed_s"] - rows[0]["time/elapsed_s"]) / (len(rows) - 1) if len(rows) > 1 else None,
    }
    if interrupted:
        summary["steps_done"] = rows[-1]["step"] + 1 if rows else run.start_step
        summary["resume_command"] = command
    if rows:
        k = max(1, min(10, len(rows) // 5))
        summary["train/loss_first"] = sum(r["train/loss"] for r in rows[:k]) / k
        summary["train/loss_last"] = sum(r["train/loss"] for r in rows[-k:]) / k
        summary["train/tokens_per_s"] = sum(r["train/input_tokens"] for r in rows) / max(elapsed, 1e-9)
    evals = [r for r in state.history if any(k.startswith("eval/") for k in r)]
    if evals:
        first, last = evals[0], evals[-1]
        summary["eval"] = {
            key: {"first": first.get(key), "first_step": first["step"], "last": last.get(key), "last_step": last["step"]}
            for key in sorted({k for r in evals for k in r if k.startswith("eval/")})
        }
    return summary


def close_service(run: RunContext, summary: dict[str, Any]) -> None:
    """Finish the backend session with how the run ended (the SDK's ``close(status)``: on
    Tinker it ends the session and its heartbeats; the local backend stops its workers). A
    backend that does not answer within 10 s is left to time the session out."""
    close = getattr(run.service_client, "close", None)
    if not callable(close):
        return
    status = "errored" if "error" in summary else "interrupted" if summary.get("interrupted") else "success"
    try:
        wait_result(close(status), timeout=10)
    except Exception as exc:  # noqa: BLE001 - the run itself is over; its own error (if any) is raised
        run.plugins.warn(run.config, f"could not close the backend session: {type(exc).__name__}: {exc}")
