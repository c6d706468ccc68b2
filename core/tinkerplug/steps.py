"""The steps phase: submit each step, log the steps that finished, evaluate and checkpoint
when due (the cookbook's ``submit_batch`` / ``finish_batch`` pair).

Steps are identified by the number of optimizer steps completed before them, so "step n"
weights are the weights after n updates, evals at step n see those weights, and a checkpoint
at step n resumes at step n.
"""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from tinkerplug import rundir
from tinkerplug.backend_calls import await_result, executor_call
from tinkerplug.hook_types import CheckpointRecord, RunContext, StepExecutor, StepResult
from tinkerplug.evaluation import eval_context_for_step, run_evaluators
from tinkerplug.training_data import TrainingData

if TYPE_CHECKING:
    from tinker import types

    from tinkerplug.config import RunConfig


@dataclass
class LoopState:
    eval_metrics: dict[int, dict[str, float]] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)
    last_finished: float = 0.0
    started: float = 0.0
    stop_requested: bool = False
    checkpointed_steps: set[int] = field(default_factory=set)


@dataclass
class Steps:
    """One run's steps phase: what it reads and what it keeps."""

    run: RunContext
    data: TrainingData
    executor: StepExecutor
    state: LoopState

    async def run_all(self) -> bool:
        """Every step from ``run.start_step`` on; ``True`` when a Ctrl-C stopped it early
        (after a checkpoint of the steps done)."""
        config, num_steps = self.run.config, self.run.num_steps
        for step in range(self.run.start_step, num_steps):
            await self.submit(step)
            done = step + 1
            if self.state.stop_requested and done < num_steps:
                self.finish(await executor_call(self.executor.drain()))
                if done not in self.state.checkpointed_steps:
                    await self.checkpoint(done)
                return True
            if due(done, config.save_every) and done < num_steps:
                await self.checkpoint(done)
        self.finish(await executor_call(self.executor.drain()))
        return False

    async def submit(self, step: int) -> None:
        """Evals due at ``step``, its learning rate, then the step itself."""
        run = self.run
        if due(step, run.config.eval_every) or step == 0:
            await self.evaluate(step)
        lr = run.plugins.lr_for_step(step, run.num_steps, run.config)
        batch = await run.objective.batch(step)  # its metrics reach the step's row through step_result
        self.finish(await executor_call(self.executor.submit(step, batch, adam_params(run.config, lr))))

    async def evaluate(self, step: int) -> None:
        """Evaluators on the weights after ``step`` updates; logged with that step's row."""
        if self.run.plugins.evaluators():
            with self.data.paused():  # evaluators use the tokenizer the renderer uses
                self.state.eval_metrics[step] = await run_evaluators(eval_context_for_step(self.run, step), self.run.plugins)

    def finish(self, results: list[StepResult]) -> None:
        """Log the steps that finished, in order."""
        for result in results:
            self.log(result)

    def log(self, result: StepResult) -> None:
        state = self.state
        now = result.finished_at
        row: dict[str, Any] = {
            "step": result.step,
            "epoch": self.data.position(result.step)[0],
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
        self.run.plugins.log_metrics(result.step, row, self.run)

    async def checkpoint(self, step: int, final: bool = False) -> None:
        """Checkpoint the weights after ``step`` updates.

        Requests run in submission order, so ``save_state`` submitted now captures exactly the
        steps submitted before it (no later step leaks in: cookbook bug #940). The executor is
        drained so every step up to ``step`` is logged before the checkpoint row that covers it.
        """
        run, name = self.run, f"step-{step:06d}"
        state_future = run.training_client.save_state(name)
        sampler_future = run.training_client.save_weights_for_sampler(name)
        finished = await executor_call(self.executor.drain())
        state_path = (await await_result(state_future)).path
        sampler_path = (await await_result(sampler_future)).path
        epoch, batch = self.data.position(step)
        record = CheckpointRecord(
            step=step, epoch=epoch, batch=batch, state_path=state_path, sampler_path=sampler_path,
            time=time.time(), final=final,
        )
        self.finish(finished)  # the steps the drain finished come before the row that covers them
        rundir.append_checkpoint(run.run_dir, record)
        self.state.checkpointed_steps.add(step)
        run.plugins.on_checkpoint(record, run)


def due(step: int, every: int) -> bool:
    return every > 0 and step % every == 0


def adam_params(config: RunConfig, lr: float) -> types.AdamParams:
    from tinker import types  # heavy: imported once training starts

    return types.AdamParams(
        learning_rate=lr,
        beta1=config.adam_beta1,
        beta2=config.adam_beta2,
        eps=config.adam_eps,
        weight_decay=config.weight_decay,
        grad_clip_norm=config.grad_clip_norm,
    )


class stop_on_sigint:
    """First Ctrl-C: finish the step in flight, checkpoint, exit. Second: stop at once."""

    def __init__(self, state: LoopState, warn: Callable[[str], None]):
        self.state = state
        self.warn = warn
        self.previous: Any = None

    def __enter__(self) -> "stop_on_sigint":
        try:
            self.previous = signal.signal(signal.SIGINT, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self.previous = None
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.state.stop_requested:
            raise KeyboardInterrupt
        self.state.stop_requested = True
        self.warn("Ctrl-C: stopping after the step in flight (press again to abort now)")

    def __exit__(self, *exc: Any) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
