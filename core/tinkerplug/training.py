"""The training loop, as a sequence of hook calls.

Per step: evals due (save sampler weights, ``evaluate``), ``lr_for_step``, submit the step
through the executor, log what finished, checkpoint when due. Steps are identified by the
number of optimizer steps completed before them, so "step n" weights are the weights after n
updates, evals at step n see those weights, and a checkpoint at step n resumes at step n.
"""

from __future__ import annotations

import inspect
import json
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tinkerplug import rundir, streaming
from tinkerplug.batches import BatchPlan
from tinkerplug.config import RunConfig
from tinkerplug.context import CheckpointRecord, EvalContext, RunContext, StepResult
from tinkerplug.data import Records, heldout_source, train_source
from tinkerplug.prefetch import Prefetcher
from tinkerplug.streaming import BackgroundCheck, RenderStats, StreamingData, check_records, render_all  # noqa: F401
from tinkerplug.errors import BackendError, ConfigError, TinkerplugError
from tinkerplug.plugins import Plugins, hook_error
from tinkerplug.progress import Reporter
from tinkerplug.watchdog import watch_for_stalls


@dataclass
class LoopState:
    eval_metrics: dict[int, dict[str, float]] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    last_finished: float = 0.0
    started: float = 0.0
    stop_requested: bool = False
    checkpointed_steps: set[int] = field(default_factory=set)


def default_resume_command(config: RunConfig) -> str:
    """The command that resumes ``config``'s run (the CLI passes a better one: the user's own
    command line, with its ``--set`` and ``-p`` options)."""
    import shlex

    src = config.source or Path("CONFIG")
    return shlex.join(["tinkerplug", "run", str(src), "--resume", "--set", f"run_dir={config.run_dir}"])


async def train(
    config: RunConfig, plugins: Plugins, reporter: Reporter, resume_command: str | None = None
) -> dict[str, Any]:
    """Run (or resume) the training ``config`` describes; return the summary.

    Every input is checked (data read, backend and training client created, examples
    rendered) before the run dir is created, so a bad input leaves nothing behind.
    """
    run_dir = Path(config.run_dir).resolve()
    command = resume_command or default_resume_command(config)
    rundir.check_run_dir(run_dir, config.resume, command)
    resuming = config.resume and (run_dir / rundir.CONFIG_JSON).is_file()
    records = plugins.load_records(train_source(config), config)  # before the resume check: its fingerprint
    run_json = {**config.to_json(), "data_fingerprint": {"train": records.fingerprint()}}
    if resuming:  # before the lock, which rewrites .lock: a refused resume touches nothing
        rundir.check_resume_config(run_dir, run_json, command, config.result_keys())
    lock = rundir.RunDirLock(run_dir).acquire() if resuming else None
    try:
        return await _train(config, plugins, reporter, run_dir, resuming, command, lock, records, run_json)
    finally:
        if lock is not None:
            lock.release()


async def _train(
    config: RunConfig,
    plugins: Plugins,
    reporter: Reporter,
    run_dir: Path,
    resuming: bool,
    command: str,
    lock: rundir.RunDirLock | None,
    records: Records,
    run_json: dict[str, Any],
) -> dict[str, Any]:
    checked = BackgroundCheck(records, start=len(records) <= streaming.WAIT_FOR_CHECK_UP_TO)
    try:
        return await _train_checked(config, plugins, reporter, run_dir, resuming, command, lock, records, run_json, checked)
    finally:
        checked.close()


async def _train_checked(
    config: RunConfig,
    plugins: Plugins,
    reporter: Reporter,
    run_dir: Path,
    resuming: bool,
    command: str,
    lock: rundir.RunDirLock | None,
    records: Records,
    run_json: dict[str, Any],
    checked: BackgroundCheck,
) -> dict[str, Any]:
    checkpoint = None
    if resuming:
        checkpoint = rundir.last_checkpoint(run_dir)
        if checkpoint is None:
            reporter.note("no complete checkpoint in the run dir yet: starting from step 0")
        elif checkpoint.final:
            reporter.note(f"{run_dir} already finished (final checkpoint at step {checkpoint.step}): nothing to do")
            return {"run_dir": str(run_dir), "steps_run": 0, "num_steps": checkpoint.step, "interrupted": False}
    elif config.resume:
        reporter.note(f"nothing to resume in {run_dir} yet: starting a new run")

    heldout = heldout_source(config)
    if heldout is not None:  # evaluators read it later: a bad file must fail now, not at step 0
        check_records(plugins.load_records(heldout, config))

    service = plugins.create_service_client(config, str(run_dir))
    reporter.note(f"backend {config.resolved_backend}, base model {config.base_model}")
    if checkpoint is not None:
        training_client = await _backend_call(
            lambda: service.create_training_client_from_state_with_optimizer(checkpoint.state_path),
            f"could not load the step-{checkpoint.step} checkpoint {checkpoint.state_path}",
            hint=f"{run_dir / rundir.CHECKPOINTS_JSONL} lists the checkpoints; remove its last row "
            "to resume from the one before",
        )
        start_step = checkpoint.step
        reporter.note(f"resuming from step {start_step} ({checkpoint.state_path})")
    else:
        training_client = await _backend_call(
            lambda: service.create_lora_training_client(
                base_model=config.base_model,
                rank=config.lora_rank,
                seed=config.seed,
                train_mlp=config.train_mlp,
                train_attn=config.train_attn,
                train_unembed=config.train_unembed,
            ),
            f"could not create a LoRA training client for base_model {config.base_model!r}",
        )
        start_step = 0

    tokenizer = training_client.get_tokenizer()
    renderer = plugins.resolve_renderer(config, tokenizer)
    # Every record parses (checked while the model loaded; a big file is checked in the
    # background from step 0 on, and a bad record stops the run at the step after it is found).
    checked.wait(len(records) <= streaming.WAIT_FOR_CHECK_UP_TO)
    data = streaming.prepare_data(records, renderer, tokenizer, config, plugins, start_step, reporter)
    data.check = checked
    num_steps = config.num_steps or (config.num_epochs or 1) * data.steps_per_epoch
    if start_step > num_steps:
        raise ConfigError(f"--resume: the last checkpoint is at step {start_step}, past num_steps={num_steps}")
    executor = plugins.make_step_executor(config, training_client)

    # Inputs are good: only now does the run dir come into being.
    own_lock = rundir.create_run_dir(run_dir, config.resume, command) if lock is None else None
    if not (run_dir / rundir.CONFIG_JSON).exists():
        rundir.atomic_write_text(run_dir / rundir.CONFIG_JSON, json.dumps(run_json, indent=2) + "\n")
    try:
        run = RunContext(
            config=config,
            run_dir=run_dir,
            plugins=plugins,
            num_steps=num_steps,
            start_step=start_step,
            service_client=service,
            training_client=training_client,
            tokenizer=tokenizer,
            renderer=renderer,
            steps_per_epoch=data.steps_per_epoch,
        )
        return await _loop(run, data, executor, reporter, checkpoint, command)
    except BaseException as exc:
        _tell_how_to_resume(exc, run_dir, command, reporter)
        raise
    finally:
        data.cache.flush()
        if own_lock is not None:
            own_lock.release()


def _tell_how_to_resume(exc: BaseException, run_dir: Path, command: str, reporter: Reporter) -> None:
    """A run that dies mid-way has lost nothing: say where it can pick up again."""
    last = rundir.last_checkpoint(run_dir)
    where = f"from its step-{last.step} checkpoint" if last else "from step 0 (no checkpoint yet)"
    text = f"the run stopped before its end; {where} it resumes with: {command}"
    if isinstance(exc, TinkerplugError):
        exc.hint = f"{exc.hint}\n  {text}" if exc.hint else text
    else:
        reporter.warn(text)


async def _loop(
    run: RunContext,
    data: StreamingData,
    executor: Any,
    reporter: Reporter,
    checkpoint: CheckpointRecord | None,
    command: str,
) -> dict[str, Any]:
    config, plugins, num_steps, start_step = run.config, run.plugins, run.num_steps, run.start_step
    state = LoopState(started=time.perf_counter())
    state.last_finished = state.started
    if checkpoint is not None:
        state.checkpointed_steps.add(checkpoint.step)
    plugins.on_run_start(run)
    plan = data.plan
    complete_at_start = data.stats.complete
    stalls = watch_for_stalls(config, state, reporter, command)
    batches = Prefetcher(data.batch, start_step, num_steps, ahead=8)
    try:
        return await _steps(run, state, plan, data, batches, executor, reporter, checkpoint, command, stalls)
    finally:
        batches.close()
        data.cache.flush()
        if not complete_at_start:
            reporter.render_stats(data.stats, config)


async def _steps(
    run: RunContext,
    state: LoopState,
    plan: Any,
    data: StreamingData,
    batches: Prefetcher,
    executor: Any,
    reporter: Reporter,
    checkpoint: CheckpointRecord | None,
    command: str,
    stalls: Any,
) -> dict[str, Any]:
    config, plugins, num_steps, start_step = run.config, run.plugins, run.num_steps, run.start_step
    from tinker import types  # heavy: imported once training starts

    def finish(results: list[StepResult]) -> None:
        for result in results:
            _log_step(run, state, plan, result, reporter)

    with reporter.progress(num_steps, start_step), _stop_on_sigint(state, reporter), stalls:
        for step in range(start_step, num_steps):
            if _due(step, config.eval_every) or step == 0:
                with batches.paused():  # evaluators use the tokenizer the renderer uses
                    await run_evals(run, state, step, reporter)
            if data.check is not None:
                data.check.wait(False)
            batch = batches.get(step)
            lr = plugins.lr_for_step(step, num_steps, config)
            adam = types.AdamParams(
                learning_rate=float(lr),
                beta1=config.adam_beta1,
                beta2=config.adam_beta2,
                eps=config.adam_eps,
                weight_decay=config.weight_decay,
                grad_clip_norm=config.grad_clip_norm,
            )
            finish(await _call_executor(executor.submit(step, batch, adam)))
            if data.check is not None:
                data.check.start()  # a big file's check: from now on, beside training
            done = step + 1
            if state.stop_requested and done < num_steps:
                finish(await _call_executor(executor.drain()))
                if done not in state.checkpointed_steps:
                    await save_checkpoint(run, state, plan, done, executor, reporter)
                reporter.stopped(done, command)
                summary = _summary(run, state, interrupted=True)
                plugins.on_run_end(run, summary)
                return summary
            if _due(done, config.save_every) and done < num_steps:
                await save_checkpoint(run, state, plan, done, executor, reporter)
        finish(await _call_executor(executor.drain()))

    with batches.paused():
        await run_evals(run, state, num_steps, reporter)
    if num_steps in state.eval_metrics:
        row = {"step": num_steps, **state.eval_metrics.pop(num_steps)}
        state.history.append(row)
        plugins.log_metrics(num_steps, row, run)
    if num_steps not in state.checkpointed_steps:
        await save_checkpoint(run, state, plan, num_steps, executor, reporter, final=True)
    summary = _summary(run, state, interrupted=False)
    reporter.summary(summary)
    plugins.on_run_end(run, summary)
    return summary


async def _backend_call(make: Any, what: str, hint: str | None = None) -> Any:
    """Call the backend and await the result; its failures become one ``BackendError``."""
    try:
        return await _result(make())
    except TinkerplugError:
        raise
    except Exception as exc:
        raise BackendError(f"{what}: {type(exc).__name__}: {exc}", hint=hint) from exc


def _due(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


async def _result(future: Any) -> Any:
    """Await an SDK future (``result_async``), or take a plain value as is."""
    if hasattr(future, "result_async"):
        return await future.result_async()
    if inspect.isawaitable(future):
        return await future
    return future


async def _call_executor(awaitable: Any) -> list[StepResult]:
    try:
        return await awaitable
    except TinkerplugError:
        raise
    except Exception as exc:
        raise BackendError(f"training step failed: {type(exc).__name__}: {exc}") from exc


async def run_evals(run: RunContext, state: LoopState, step: int, reporter: Reporter) -> None:
    """Run every evaluator on the weights after ``step`` updates; sampler weights are saved and
    a sampling client opened only if one of them asks (``context.sampling_client``)."""
    evaluators = run.plugins.evaluators()
    if not evaluators:
        return

    def open_sampler() -> tuple[str, Any]:
        saved = _sync_result(run.training_client.save_weights_for_sampler(f"eval-{step:06d}"))
        return saved.path, _sync_result(run.service_client.create_sampling_client(model_path=saved.path))

    context = EvalContext(
        step=step, renderer=run.renderer, tokenizer=run.tokenizer, config=run.config, run_dir=run.run_dir,
        open_sampler=open_sampler, training_client=run.training_client, plugins=run.plugins,
    )
    merged: dict[str, float] = {}
    for name, call in evaluators:
        started = time.perf_counter()
        try:
            value = call(context=context)
            if inspect.isawaitable(value):
                value = await value
        except Exception as exc:  # noqa: BLE001 - reported by plugin name below
            error = hook_error(name, "evaluate", exc)
            if run.config.eval_errors == "raise":
                raise error from exc
            reporter.warn(f"step {step}: {error.message} (training continues; eval_errors = \"raise\" stops it)")
            continue
        for key, metric in (value or {}).items():
            merged[f"eval/{key}"] = float(metric)
        merged[f"time/eval/{name}_s"] = time.perf_counter() - started
    state.eval_metrics[step] = merged
    reporter.evals(step, {k: v for k, v in merged.items() if k.startswith("eval/")})


def _sync_result(future: Any) -> Any:
    """Wait for an SDK future (``result()``), or take a plain value as is."""
    return future.result() if hasattr(future, "result_async") else future


async def save_checkpoint(
    run: RunContext,
    state: LoopState,
    plan: BatchPlan,
    step: int,
    executor: Any,
    reporter: Reporter,
    final: bool = False,
) -> None:
    """Checkpoint the weights after ``step`` updates.

    Requests run in submission order, so ``save_state`` submitted now captures exactly the
    steps submitted before it (no later step leaks in: cookbook bug #940). The executor is
    drained so every step up to ``step`` is logged before the checkpoint row that covers it.
    """
    name = f"step-{step:06d}"
    state_future = run.training_client.save_state(name)
    sampler_future = run.training_client.save_weights_for_sampler(name)
    finished = await _call_executor(executor.drain())
    state_path = (await _result(state_future)).path
    sampler_path = (await _result(sampler_future)).path
    epoch, batch = plan.position(step)
    record = CheckpointRecord(
        step=step, epoch=epoch, batch=batch, state_path=state_path, sampler_path=sampler_path,
        time=time.time(), final=final,
    )
    # Steps finished by the drain are logged before the row that covers them.
    for result in finished:
        _log_step(run, state, plan, result, reporter)
    rundir.append_checkpoint(run.run_dir, record)
    state.checkpointed_steps.add(step)
    run.plugins.on_checkpoint(record, run)
    reporter.checkpoint(record)


def _log_step(run: RunContext, state: LoopState, plan: BatchPlan, result: StepResult, reporter: Reporter) -> None:
    epoch, _ = plan.position(result.step)
    now = result.finished_at
    row: dict[str, Any] = {
        "step": result.step,
        "epoch": epoch,
        "train/loss": result.mean_nll,
        "train/loss_sum": result.loss_sum,
        "lr": result.learning_rate,
        "train/examples": result.num_examples,
        **result.metrics,
        "time/step_s": now - state.last_finished,
        "time/elapsed_s": now - state.started,
    }
    state.last_finished = now
    row.update(state.eval_metrics.pop(result.step, {}))
    state.history.append(row)
    run.plugins.log_metrics(result.step, row, run)
    reporter.step(row)


def _summary(run: RunContext, state: LoopState, interrupted: bool) -> dict[str, Any]:
    steps = [r for r in state.history if "train/loss" in r]
    evals = [r for r in state.history if any(k.startswith("eval/") for k in r)]
    elapsed = time.perf_counter() - state.started
    summary: dict[str, Any] = {
        "run_dir": str(run.run_dir),
        "steps_run": len(steps),
        "num_steps": run.num_steps,
        "interrupted": interrupted,
        "elapsed_s": elapsed,
        "s_per_step": (steps[-1]["time/elapsed_s"] - steps[0]["time/elapsed_s"]) / max(1, len(steps) - 1)
        if len(steps) > 1
        else None,
    }
    if steps:
        k = max(1, min(10, len(steps) // 5))
        summary["train/loss_first"] = sum(r["train/loss"] for r in steps[:k]) / k
        summary["train/loss_last"] = sum(r["train/loss"] for r in steps[-k:]) / k
        summary["train/tokens_per_s"] = sum(r["train/input_tokens"] for r in steps) / max(elapsed, 1e-9)
    if evals:
        first, last = evals[0], evals[-1]
        summary["eval"] = {
            key: {"first": first.get(key), "first_step": first["step"], "last": last.get(key), "last_step": last["step"]}
            for key in sorted({k for r in evals for k in r if k.startswith("eval/")})
        }
    return summary


class _stop_on_sigint:
    """First Ctrl-C: finish the step in flight, checkpoint, exit. Second: stop at once."""

    def __init__(self, state: LoopState, reporter: Reporter):
        self.state = state
        self.reporter = reporter
        self.previous: Any = None

    def __enter__(self) -> "_stop_on_sigint":
        try:
            self.previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self.previous = None
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.state.stop_requested:
            raise KeyboardInterrupt
        self.state.stop_requested = True
        self.reporter.warn("Ctrl-C: stopping after the step in flight (press again to abort now)")

    def __exit__(self, *exc: Any) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
