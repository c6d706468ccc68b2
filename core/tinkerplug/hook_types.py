"""Objects the loop hands to plugins. Plain dataclasses: no heavy imports."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

if TYPE_CHECKING:
    from tinker import ServiceClient, TrainingClient, types
    from tinker_cookbook.renderers import Renderer

    from tinkerplug.config import RunConfig
    from tinkerplug.plugins import Plugins


@dataclass
class RunContext:
    """What a run is made of; passed to ``on_run_start``, ``log_metrics``, ``on_checkpoint``,
    ``on_run_end``."""

    config: RunConfig
    run_dir: Path
    plugins: Plugins
    num_steps: int = 0
    start_step: int = 0
    service_client: ServiceClient | None = None  # the SDK's surface, as the backend plugin provides it
    training_client: TrainingClient | None = None
    tokenizer: Any = None
    renderer: Renderer | None = None
    steps_per_epoch: int = 0
    objective: Objective | None = None  # what ``make_objective`` made


class EvalContext:
    """What an evaluator gets: the weights at ``step`` and how to talk to them.

    ``sampling_client`` / ``sampler_path`` are opened on first access, once per step (saving
    sampler weights is a remote save on Tinker: an evaluator that returns ``None`` first costs
    nothing). ``training_client`` is the training client at that step, for loss-based
    evaluators that call ``forward``; ``plugins`` calls hooks (``plugins.load_records``).
    """

    def __init__(
        self,
        step: int,
        renderer: Any,
        tokenizer: Any,
        config: RunConfig,
        run_dir: Path,
        open_sampler: Callable[[], tuple[str, Any]],
        training_client: Any = None,
        plugins: Plugins | None = None,
    ):
        self.step = step
        self.renderer = renderer
        self.tokenizer = tokenizer
        self.config = config
        self.run_dir = run_dir
        self.training_client = training_client
        self.plugins = plugins
        self._open_sampler = open_sampler
        self._sampler: tuple[str, Any] | None = None

    @property
    def sampler_opened(self) -> bool:
        """Whether an evaluator has asked for the sampler yet (weights saved, client open)."""
        return self._sampler is not None

    @property
    def sampling_client(self) -> Any:
        """A sampling client on the weights of ``step`` (``sample``, ``compute_logprobs``)."""
        return self._sampler_pair()[1]

    @property
    def sampler_path(self) -> str:
        """Where the sampler weights of ``step`` are (a local dir or a ``tinker://`` path)."""
        return self._sampler_pair()[0]

    def _sampler_pair(self) -> tuple[str, Any]:
        if self._sampler is None:
            self._sampler = self._open_sampler()
        return self._sampler


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
    removed: bool = False  # deleted by a retention plugin; the row stays, marked

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


@dataclass
class StepBatch:
    """What one step sends: ``datums`` with ``loss_fn`` (a Tinker loss name, or a callable
    ``(data, logprobs_list) -> (loss, metrics)`` sent with ``forward_backward_custom``) and
    its ``loss_fn_config``; ``metrics`` (rewards, timings) go into the step's row, and
    ``summarize(fwd_bwd_output)``, when set, adds metrics computed from the backend's output
    (e.g. the sampler-learner KL from the learner's logprobs)."""

    datums: list[Any]
    loss_fn: Any = "cross_entropy"
    loss_fn_config: dict[str, Any] | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    summarize: Callable[[Any], dict[str, float]] | None = None


def as_step_batch(data: Any) -> StepBatch:
    """A ``StepBatch`` as is; a plain datum list as a supervised (``cross_entropy``) batch."""
    return data if isinstance(data, StepBatch) else StepBatch(list(data))


class Objective(Protocol):
    """What a run trains for; returned by the ``make_objective`` hook."""

    async def batch(self, step: int) -> StepBatch:
        """The batch of step ``step`` (sampling first where the objective needs samples)."""
        ...


class StepExecutor(Protocol):
    """Submits training steps; returned by the ``make_step_executor`` hook."""

    async def submit(
        self, step: int, data: StepBatch | list[types.Datum], adam_params: types.AdamParams
    ) -> list[StepResult]:
        """Submit step ``step`` (a ``StepBatch``, or datums for ``cross_entropy``); return
        the steps (in order) that finished meanwhile."""
        ...

    async def drain(self) -> list[StepResult]:
        """Wait for every step still in flight; return them in order."""
        ...
