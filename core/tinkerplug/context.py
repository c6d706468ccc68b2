"""Objects the loop hands to plugins. Plain dataclasses: no heavy imports."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from tinker import types

    from tinkerplug.config import RunConfig
    from tinkerplug.plugins import Plugins


@dataclass
class RunContext:
    """What a run is made of; passed to ``on_run_start``, ``log_metrics``, ``on_checkpoint``."""

    config: RunConfig
    run_dir: Path
    plugins: Plugins
    num_steps: int = 0
    start_step: int = 0
    service_client: Any = None
    training_client: Any = None
    tokenizer: Any = None
    renderer: Any = None
    steps_per_epoch: int = 0


@dataclass
class EvalContext:
    """What an evaluator gets: the sampler weights at ``step`` and how to talk to them."""

    step: int
    sampling_client: Any
    sampler_path: str
    renderer: Any
    tokenizer: Any
    config: RunConfig
    run_dir: Path


@dataclass
class CheckpointRecord:
    """One row of ``checkpoints.jsonl``: the state after ``step`` optimizer steps."""

    step: int
    epoch: int
    batch: int
    state_path: str
    sampler_path: str
    time: float
    final: bool = False

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class StepResult:
    """A finished training step, as returned by a ``StepExecutor``."""

    step: int
    loss_sum: float
    weight_sum: float
    num_tokens: int
    num_examples: int
    learning_rate: float
    submitted_at: float
    finished_at: float
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def mean_nll(self) -> float:
        return self.loss_sum / self.weight_sum if self.weight_sum else float("nan")


class StepExecutor(Protocol):
    """Submits training steps; returned by the ``make_step_executor`` hook."""

    async def submit(
        self, step: int, data: list[types.Datum], adam_params: types.AdamParams
    ) -> list[StepResult]:
        """Submit step ``step``; return the steps (in order) that finished meanwhile."""
        ...

    async def drain(self) -> list[StepResult]:
        """Wait for every step still in flight; return them in order."""
        ...
