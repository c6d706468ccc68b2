"""The training data of a run: rendered as the steps need it, ahead of them, through the
render cache; and the batch of each step.

The loop sees only ``TrainingData`` (``steps_per_epoch``, ``num_examples``, ``stats``,
``batch(step)``, ``position(step)``, and ``start``/``paused``/``close`` around the steps).

Batches are a pure function of (seed, step, data): ``BatchPlan`` shuffles *record* numbers
(not kept examples, which are not known before everything is rendered), and a record that
renders to nothing trainable (longer than ``max_length`` with ``overlong = "drop"``, or no
trained token) is replaced by ``replacement(seed, step, slot, attempt)`` until a kept one is
found. Whether a record is dropped depends on the data and the config only, so every run,
resumed or not, cached or not, builds the same batches; with no drops they are exactly the
batches of the plan. An epoch is ``num_records // batch_size`` steps, so ``num_epochs``
becomes a step count from the number of records alone.
"""

from __future__ import annotations

import contextlib
import random
import threading
from dataclasses import dataclass
from typing import Any, Iterator

from tinkerplug.batches import BatchPlan
from tinkerplug.data import BackgroundCheck
from tinkerplug.errors import DataError, PluginError
from tinkerplug.prefetch import Prefetcher
from tinkerplug.render_cache import (
    DROPPED_OVERLONG,
    DROPPED_UNTRAINED,
    KEPT,
    TRUNCATED,
    RenderCache,
    RenderedExample,
    open_render_cache,
)

FULL_CHECK_AFTER = 32  # failed replacements in a row before every record is rendered to check
RENDER_ALL_UP_TO = 2048  # records left to render: fewer are rendered before step 0 (about 2 s)
WAIT_FOR_CHECK_UP_TO = 200_000  # records: a bigger file's check goes on after step 0 (~10 us each)
AHEAD = 8  # steps rendered ahead of training


@dataclass
class RenderStats:
    """Counts over the records rendered so far (``rendered == total`` once all are)."""

    total: int = 0
    rendered: int = 0
    kept: int = 0
    dropped_overlong: int = 0
    truncated: int = 0
    dropped_untrained: int = 0
    longest: int = 0
    shortest: int = 0

    @property
    def complete(self) -> bool:
        return self.rendered == self.total

    def describe(self, max_length: int) -> tuple[str, str | None]:
        """(the note, the warning or ``None``) a run reports about its data: of every record
        once all are rendered, else of those rendered so far."""
        if self.complete:
            parts = [f"{self.kept}/{self.total} examples"]
        else:
            parts = [f"{self.kept}/{self.rendered} examples kept of the {self.total} records rendered so far"]
        if self.dropped_overlong:
            parts.append(f"{self.dropped_overlong} dropped as longer than max_length={max_length}")
        if self.truncated:
            parts.append(f"{self.truncated} truncated to max_length={max_length}")
        if self.dropped_untrained:
            parts.append(f"{self.dropped_untrained} dropped with no trained token")
        warning = "; ".join(parts[1:]) if self.dropped_overlong or self.truncated else None
        return "data: " + ", ".join(parts), warning


def replacement(seed: int, step: int, slot: int, attempt: int, num_records: int) -> int:
    """The record that stands in for a dropped one: fixed by its place in the run alone."""
    return random.Random(f"{seed}:{step}:{slot}:{attempt}").randrange(num_records)


def render_record(record: dict[str, Any], renderer: Any, config: Any, plugins: Any) -> RenderedExample:
    """Render one record (``render_example``) and apply ``max_length``/``overlong`` and
    ``loss_reduction``, exactly as every run before streaming did."""
    import numpy as np

    datum = plugins.render_example(record, renderer, config)
    length = datum.model_input.length
    tokens = np.asarray(datum.model_input.to_ints(), dtype=np.int32)
    targets = datum.loss_fn_inputs["target_tokens"].to_numpy()
    weights = datum.loss_fn_inputs["weights"].to_numpy().astype("float32")
    if targets.ndim != 1 or weights.ndim != 1:
        raise PluginError(
            f"render_example returned target_tokens of shape {list(targets.shape)}: training data is one "
            "target token per input token (the render cache holds 1-D targets and weights)"
        )
    status = KEPT
    if length > config.max_length:
        if config.overlong == "drop":
            return _dropped(DROPPED_OVERLONG, length)
        status = TRUNCATED
        tokens, targets, weights = tokens[: config.max_length], targets[: config.max_length], weights[: config.max_length]
    total = float(weights.sum())
    if total <= 0:
        return _dropped(DROPPED_UNTRAINED, length)
    if config.loss_reduction == "mean":
        weights = weights / total
    return RenderedExample(status, length, tokens, targets.astype(np.int32), weights.astype(np.float32))


def _dropped(status: int, length: int) -> RenderedExample:
    import numpy as np

    empty = np.zeros(0, dtype=np.int32)
    return RenderedExample(status, length, empty, empty, np.zeros(0, dtype=np.float32))


def to_datum(example: RenderedExample) -> Any:
    from tinker import types

    return types.Datum(
        model_input=types.ModelInput.from_ints([int(t) for t in example.tokens]),
        loss_fn_inputs={
            "target_tokens": types.TensorData.from_numpy(example.targets.astype("int64")),
            "weights": types.TensorData.from_numpy(example.weights.astype("float32")),
        },
    )


class TrainingData:
    """The training data of a run: ``batch(step)`` renders (or reads from the cache) just the
    records that step uses; between ``start`` and ``close`` a thread does it ahead."""

    def __init__(self, records: Any, renderer: Any, config: Any, plugins: Any, cache: RenderCache):
        self.records = records
        self.renderer = renderer
        self.config = config
        self.plugins = plugins
        self.cache = cache
        self.plan = BatchPlan(len(records), config.batch_size, config.seed)
        self._counts_reported = False  # at start-up when complete; else at the end
        self._checked = False
        self._lock = threading.Lock()
        self.check: BackgroundCheck | None = None  # the records' parse check, when one runs
        self._ahead: Prefetcher | None = None
        self._first_step = 0

    @property
    def num_examples(self) -> int:
        return len(self.records)

    @property
    def steps_per_epoch(self) -> int:
        return self.plan.steps_per_epoch

    def position(self, step: int) -> tuple[int, int]:
        """(epoch, batch index within the epoch) of ``step``."""
        return self.plan.position(step)

    @property
    def stats(self) -> RenderStats:
        return RenderStats(total=len(self.records), **self.cache.counts())

    def example(self, index: int) -> RenderedExample:
        return self.cache.example(index, self.render)

    def render(self, index: int) -> RenderedExample:
        """Record ``index`` rendered (``render_example``), a renderer's error naming its ``FILE:LINE``."""
        try:
            return render_record(self.records[index], self.renderer, self.config, self.plugins)
        except PluginError as exc:
            raise DataError(f"{self.where(index)}: {exc.message}", exc.hint) from None

    def where(self, index: int) -> str:
        if hasattr(self.records, "where"):
            return self.records.where(index)
        return f"{self.config.data.train} record {index + 1}"

    def batch_indices(self, step: int) -> list[int]:
        """The records of ``step``: the plan's, each dropped one replaced."""
        chosen = []
        for slot, index in enumerate(self.plan.indices(step)):
            attempt = 0
            while self.example(index).dropped:
                attempt += 1
                if attempt == FULL_CHECK_AFTER:
                    self.check_enough_kept()
                index = replacement(self.config.seed, step, slot, attempt, len(self.records))
            chosen.append(index)
        return chosen

    def raise_bad_record(self, until_done: bool) -> None:
        """A bad record the background check found so far stops the run (``until_done``:
        once every record is checked)."""
        if self.check is not None:
            self.check.wait(until_done)

    def batch(self, step: int) -> list[Any]:
        """The ``tinker.types.Datum`` list of step ``step`` (from the thread, once started)."""
        self.raise_bad_record(False)  # a bad record found meanwhile stops the run here
        if self.check is not None and step > self._first_step:
            self.check.start()  # a big file's check: from step 0 on, beside training
        if self._ahead is not None:
            return self._ahead.get(step)
        return self.build_batch(step)

    def build_batch(self, step: int) -> list[Any]:
        return [to_datum(self.example(i)) for i in self.batch_indices(step)]

    def start(self, start_step: int, num_steps: int) -> None:
        """Render the steps from ``start_step`` on ahead of training, in a thread."""
        self._first_step = start_step
        self._ahead = Prefetcher(self.build_batch, start_step, num_steps, ahead=AHEAD)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """No rendering meanwhile (evaluators use the tokenizer the renderer uses)."""
        with self._ahead.paused() if self._ahead is not None else contextlib.nullcontext():
            yield

    def close(self) -> None:
        """Stop the thread and the check; write what was rendered to the cache."""
        if self._ahead is not None:
            self._ahead.close()
            self._ahead = None
        if self.check is not None:
            self.check.close()
        self.cache.flush()

    def report_counts(self, at_end: bool) -> None:
        """Say the data counts once: at start-up when every record is rendered (small data, a
        full cache), else where the rest comes from now and the counts of what was rendered
        ``at_end``."""
        stats, plugins, config = self.stats, self.plugins, self.config
        if self._counts_reported:
            return
        if not stats.complete and not at_end:
            plugins.note(
                config,
                f"data: {stats.total} records; rendering runs ahead of training "
                f"({stats.rendered} in the cache {self.cache.directory}); counts at the end",
            )
            return
        note, warning = stats.describe(config.max_length)
        plugins.note(config, note)
        if warning:
            plugins.warn(config, warning)
        self._counts_reported = True

    def check_enough_kept(self) -> None:
        """Render every record (once; through the cache) and refuse data with fewer kept
        examples than a batch: called when drops are so common that replacements keep failing,
        and when the counts are complete anyway."""
        self.render_missing()
        check_stats(self.stats, self.config)

    def render_missing(self) -> None:
        """Render every record not in the cache yet (so the counts are complete)."""
        with self._lock:
            if not self._checked:
                self.cache.fill(self.render)
                self._checked = True


def check_stats(stats: RenderStats, config: Any) -> None:
    """The refusals a run gives when every record's fate is known."""
    if not stats.complete:
        return
    train = config.data.train
    if stats.kept == 0:
        if stats.dropped_overlong == stats.total:
            raise DataError(
                f"every example in {train} is longer than max_length={config.max_length} "
                f"tokens (shortest {stats.shortest}, longest {stats.longest})",
                hint=f"raise max_length (e.g. --set max_length={stats.longest}) or set overlong = \"truncate\"",
            )
        raise DataError(
            f"no example in {train} has a token to train on (train_on_what = {config.train_on_what!r})",
            hint="each record needs an assistant message (or choose another train_on_what)",
        )
    if stats.kept < config.batch_size:
        raise DataError(
            f"{train} has {stats.kept} usable examples, fewer than batch_size={config.batch_size}",
            hint=f"add data or lower batch_size (e.g. --set batch_size={stats.kept})",
        )


def render_training_data(
    records: Any, renderer: Any, config: Any, plugins: Any, tokenizer: Any = None, start_step: int = 0,
    check: BackgroundCheck | None = None,
) -> TrainingData:
    """The run's data over the render cache of its key (see ``render_cache``; records without
    a ``fingerprint``, or no ``tokenizer``: a cache in memory only). Small data is rendered
    whole now (exact counts and refusals before step 0); the first step's examples always
    are, so a renderer that fails on the data fails before the run dir exists. ``check``: the
    records' background check, awaited here for a file of up to ``WAIT_FOR_CHECK_UP_TO``
    records, else at each step (``TrainingData.raise_bad_record``). The counts are reported
    here when every record is rendered, else at the end of the run."""
    if check is not None:  # a bad record first: its FILE:LINE says more than any count
        check.wait(until_done=len(records) <= WAIT_FOR_CHECK_UP_TO)
    if len(records) < config.batch_size:
        raise DataError(
            f"{config.data.train} has {len(records)} examples, fewer than batch_size={config.batch_size}",
            hint=f"add data or lower batch_size (e.g. --set batch_size={len(records)})",
        )
    cached = hasattr(records, "fingerprint") and tokenizer is not None  # else a cache in memory only
    settings = render_settings(records, renderer, config, plugins) if cached else None
    cache = open_render_cache(len(records), settings, tokenizer)
    data = TrainingData(records, renderer, config, plugins, cache)
    data.check = check
    if len(records) - data.stats.rendered <= RENDER_ALL_UP_TO:
        data.render_missing()
    check_stats(data.stats, config)
    data.batch_indices(start_step)
    data.report_counts(at_end=False)
    return data


def render_settings(records: Any, renderer: Any, config: Any, plugins: Any) -> dict[str, Any]:
    """Everything a rendered example depends on but the tokenizer (the render cache's key)."""
    from importlib import metadata

    try:
        cookbook = metadata.version("tinker-cookbook")
    except metadata.PackageNotFoundError:
        cookbook = None
    return {
        "data": records.fingerprint(),
        "renderer": [config.renderer, f"{type(renderer).__module__}.{type(renderer).__qualname__}", cookbook],
        "base_model": config.base_model,
        "max_length": config.max_length,
        "overlong": config.overlong,
        "train_on_what": config.train_on_what,
        "loss_reduction": config.loss_reduction,
        "render_hooks": [impl.plugin_name for impl in plugins.impls("render_example")],
    }
