"""The training data of a run: every record rendered once, in the prepare phase, and the
batch of each step.

The loop sees only ``TrainingData`` (``steps_per_epoch``, ``num_examples``, ``stats``,
``batch(step)``, ``position(step)``), so how examples are rendered and kept (all in memory
today; in the background or from a cache later) can change without touching it. Which
examples go into which step is ``BatchPlan``'s (a pure function of step and seed).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from tinkerplug.batches import BatchPlan
from tinkerplug.errors import DataError, PluginError

if TYPE_CHECKING:
    from tinkerplug.config import RunConfig
    from tinkerplug.data import Records
    from tinkerplug.plugins import Plugins


@dataclass
class RenderStats:
    total: int = 0
    kept: int = 0
    dropped_overlong: int = 0
    truncated: int = 0
    dropped_untrained: int = 0
    longest: int = 0
    shortest: int = 1 << 30

    def describe(self, max_length: int) -> tuple[str, str | None]:
        """(the note, the warning or ``None``) a run reports about its data."""
        parts = [f"{self.kept}/{self.total} examples"]
        if self.dropped_overlong:
            parts.append(f"{self.dropped_overlong} dropped as longer than max_length={max_length}")
        if self.truncated:
            parts.append(f"{self.truncated} truncated to max_length={max_length}")
        if self.dropped_untrained:
            parts.append(f"{self.dropped_untrained} dropped with no trained token")
        warning = "; ".join(parts[1:]) if self.dropped_overlong or self.truncated else None
        return "data: " + ", ".join(parts), warning


class TrainingData:
    """The rendered examples of a run and the batch plan over them."""

    def __init__(self, examples: list[Any], stats: RenderStats, batch_size: int, seed: int):
        self._examples = examples
        self.stats = stats
        self.plan = BatchPlan(len(examples), batch_size, seed)

    @property
    def num_examples(self) -> int:
        return len(self._examples)

    @property
    def steps_per_epoch(self) -> int:
        return self.plan.steps_per_epoch

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, batch index within the epoch) of ``step``."""
        return self.plan.position(step)

    def batch(self, step: int) -> list[Any]:
        """The ``tinker.types.Datum`` list of step ``step``."""
        return [self._examples[i] for i in self.plan.indices(step)]


def render_training_data(records: Records, renderer: Any, config: RunConfig, plugins: Plugins) -> TrainingData:
    """Render every record once (``render_example``); apply ``max_length`` / ``overlong`` and
    the weight reduction; refuse data that leaves no full batch to train on."""
    stats = RenderStats(total=len(records))
    examples = []
    for index in range(len(records)):
        try:
            datum = plugins.render_example(records[index], renderer, config)
        except PluginError as exc:
            raise DataError(f"{records.where(index)}: {exc.message}", exc.hint) from None
        example = fit_example(datum, config, stats)
        if example is not None:
            examples.append(example)
    stats.kept = len(examples)
    check_enough(examples, stats, config)
    return TrainingData(examples, stats, config.batch_size, config.seed)


def fit_example(datum: Any, config: RunConfig, stats: RenderStats) -> Any | None:
    """``datum`` cut or dropped to ``max_length``, weights reduced; ``None`` when dropped."""
    from tinker import types

    length = datum.model_input.length
    stats.longest = max(stats.longest, length)
    stats.shortest = min(stats.shortest, length)
    tokens = datum.model_input.to_ints()
    targets = datum.loss_fn_inputs["target_tokens"].to_numpy()
    weights = datum.loss_fn_inputs["weights"].to_numpy().astype("float32")
    if length > config.max_length:
        if config.overlong == "drop":
            stats.dropped_overlong += 1
            return None
        stats.truncated += 1
        tokens, targets, weights = tokens[: config.max_length], targets[: config.max_length], weights[: config.max_length]
    total = float(weights.sum())
    if total <= 0:
        stats.dropped_untrained += 1
        return None
    if config.loss_reduction == "mean":
        weights = weights / total
    return types.Datum(
        model_input=types.ModelInput.from_ints([int(t) for t in tokens]),
        loss_fn_inputs={
            "target_tokens": types.TensorData.from_numpy(targets.astype("int64")),
            "weights": types.TensorData.from_numpy(weights.astype("float32")),
        },
    )


def check_enough(examples: list[Any], stats: RenderStats, config: RunConfig) -> None:
    if not examples:
        if stats.dropped_overlong == stats.total:
            raise DataError(
                f"every example in {config.data.label()} is longer than max_length={config.max_length} "
                f"tokens (shortest {stats.shortest}, longest {stats.longest})",
                hint=f"raise max_length (e.g. --set max_length={stats.longest}) or set overlong = \"truncate\"",
            )
        raise DataError(
            f"no example in {config.data.label()} has a token to train on "
            f"(train_on_what = {config.train_on_what!r})",
            hint="each record needs an assistant message (or choose another train_on_what)",
        )
    if len(examples) < config.batch_size:
        raise DataError(
            f"{config.data.label()} has {len(examples)} usable examples, fewer than batch_size={config.batch_size}",
            hint=f"add data or lower batch_size (e.g. --set batch_size={len(examples)})",
        )
