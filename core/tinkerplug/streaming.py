"""Training data rendered as the steps need it, ahead of them, through the render cache.

Batches are a pure function of (seed, step, data): ``BatchPlan`` shuffles *record* numbers
(not kept examples, which are not known before everything is rendered), and a record that
renders to nothing trainable (longer than ``max_length`` with ``overlong = "drop"``, or no
trained token) is replaced by ``replacement(seed, step, slot, attempt)`` until a kept one is
found. Whether a record is dropped depends on the data and the config only, so every run,
resumed or not, cached or not, builds the same batches; with no drops they are exactly the
batches of the plan.

An epoch is ``num_records // batch_size`` steps, so ``num_epochs`` becomes a step count from
the number of records alone.
"""

from __future__ import annotations

import random
import threading
from dataclasses import dataclass
from typing import Any

from tinkerplug.batches import BatchPlan
from tinkerplug.errors import DataError, PluginError
from tinkerplug.render_cache import (
    DROPPED_OVERLONG,
    DROPPED_UNTRAINED,
    KEPT,
    TRUNCATED,
    RenderCache,
    RenderedExample,
    cache_key,
    tokenizer_identity,
)

FULL_CHECK_AFTER = 32  # failed replacements in a row before every record is rendered to check


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


def check_records(records: Any, stop: threading.Event | None = None) -> None:
    """Read every record, so a bad one raises its error (``stop`` ends it early)."""
    if hasattr(records, "check_all"):
        records.check_all(stop)
        return
    for index in range(len(records)):  # any other reader: reading a record checks it
        if stop is not None and stop.is_set():
            return
        records[index]


class BackgroundCheck:
    """Parse and check every record in a thread (while the model loads, and on into training
    for a big file); ``wait`` raises the first bad record's error."""

    def __init__(self, records: Any, start: bool = True):
        self.error: BaseException | None = None
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(records,), name="tinkerplug-check", daemon=True)
        if start:
            self.start()

    def start(self) -> None:
        """Start checking (once). A big file starts after step 0: the check is pure Python and
        would share the interpreter lock with the start-up's imports and model load."""
        if not self.thread.is_alive() and self.thread.ident is None:
            self.thread.start()

    def _run(self, records: Any) -> None:
        try:
            check_records(records, self.stop)
        except BaseException as exc:  # noqa: BLE001 - raised by wait
            self.error = exc

    def wait(self, until_done: bool = True) -> None:
        """Raise the error found so far (``until_done``: once the whole file is checked)."""
        if until_done:
            self.start()
            self.thread.join()
        if self.error is not None:
            error, self.error = self.error, None
            if not until_done and isinstance(error, DataError):
                error.hint = (f"{error.hint}\n  " if error.hint else "") + (
                    "found by the background check while training; fix the file and start a new run "
                    "(a resume on a changed file is refused)"
                )
            raise error

    def close(self) -> None:
        self.stop.set()


class StreamingData:
    """The training data of a run: ``batch(step)`` renders (or reads from the cache) just the
    records that step uses."""

    def __init__(self, records: Any, renderer: Any, config: Any, plugins: Any, cache: RenderCache):
        self.records = records
        self.renderer = renderer
        self.config = config
        self.plugins = plugins
        self.cache = cache
        self.plan = BatchPlan(len(records), config.batch_size, config.seed)
        self._checked = False
        self._lock = threading.Lock()
        self.check: BackgroundCheck | None = None  # the records' parse check, when one runs

    @property
    def num_examples(self) -> int:
        return len(self.records)

    @property
    def steps_per_epoch(self) -> int:
        return self.plan.steps_per_epoch

    @property
    def stats(self) -> RenderStats:
        c = self.cache.counts()
        return RenderStats(
            total=len(self.records), rendered=c["rendered"], kept=c["kept"], truncated=c["truncated"],
            dropped_overlong=c["dropped_overlong"], dropped_untrained=c["dropped_untrained"],
            longest=c["longest"], shortest=c["shortest"],
        )

    def example(self, index: int) -> RenderedExample:
        cached = self.cache.get(index)
        if cached is not None:
            return cached
        record = self.records[index]
        try:
            example = render_record(record, self.renderer, self.config, self.plugins)
        except PluginError as exc:
            raise DataError(f"{self.records.where(index)}: {exc.message}", exc.hint) from None
        self.cache.put(index, example)
        return example

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

    def batch(self, step: int) -> list[Any]:
        return [to_datum(self.example(i)) for i in self.batch_indices(step)]

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
                for index in self.cache.missing():
                    self.example(index)
                self.cache.flush()
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


RENDER_ALL_UP_TO = 2048  # records left to render: fewer are rendered before step 0 (about 2 s)
WAIT_FOR_CHECK_UP_TO = 200_000  # records: a bigger file's check may go on after step 0 (~10 us each)


def prepare_data(
    records: Any, renderer: Any, tokenizer: Any, config: Any, plugins: Any, start_step: int, reporter: Any
) -> StreamingData:
    """Open the render cache and render the first step's examples now, so a renderer that
    fails on the data fails before the run dir exists; the rest renders ahead of training."""
    if len(records) < config.batch_size:
        raise DataError(
            f"{config.data.train} has {len(records)} examples, fewer than batch_size={config.batch_size}",
            hint=f"add data or lower batch_size (e.g. --set batch_size={len(records)})",
        )
    data = open_training_data(records, renderer, tokenizer, config, plugins)
    if len(records) - data.stats.rendered <= RENDER_ALL_UP_TO:  # about a second: exact counts now
        data.render_missing()
    stats = data.stats
    check_stats(stats, config)
    data.batch_indices(start_step)
    if stats.complete:
        reporter.render_stats(stats, config)
    else:
        reporter.note(
            f"data: {len(records)} records; rendering runs ahead of training "
            f"({stats.rendered} in the cache {data.cache.directory}); counts at the end"
        )
    return data


def open_training_data(records: Any, renderer: Any, tokenizer: Any, config: Any, plugins: Any) -> StreamingData:
    """The run's data over the render cache of its key (see ``render_cache``)."""
    from tinkerplug.render_cache import cache_root

    parts = render_key_parts(records, renderer, tokenizer, config, plugins)
    directory = cache_root() / "rendered" / cache_key(parts)
    return StreamingData(records, renderer, config, plugins, RenderCache(directory, len(records), meta=parts))


def render_key_parts(records: Any, renderer: Any, tokenizer: Any, config: Any, plugins: Any) -> dict[str, Any]:
    """Everything a rendered example depends on."""
    from importlib import metadata

    try:
        cookbook = metadata.version("tinker-cookbook")
    except metadata.PackageNotFoundError:
        cookbook = None
    return {
        "data": records.fingerprint(),
        "renderer": [config.renderer, f"{type(renderer).__module__}.{type(renderer).__qualname__}", cookbook],
        "base_model": config.base_model,
        "tokenizer": tokenizer_identity(tokenizer),
        "max_length": config.max_length,
        "overlong": config.overlong,
        "train_on_what": config.train_on_what,
        "loss_reduction": config.loss_reduction,
        "render_hooks": [impl.plugin_name for impl in plugins.impls("render_example")],
    }


def render_all(records: list[dict[str, Any]], renderer: Any, config: Any, plugins: Any) -> tuple[list[Any], RenderStats]:
    """Render a (small) list of records at once: kept datums and their counts."""
    counts = {KEPT: 0, TRUNCATED: 0, DROPPED_OVERLONG: 0, DROPPED_UNTRAINED: 0}
    data, lengths = [], []
    for record in records:
        example = render_record(record, renderer, config, plugins)
        counts[example.status] += 1
        lengths.append(example.length)
        if not example.dropped:
            data.append(to_datum(example))
    stats = RenderStats(
        total=len(records), rendered=len(records), kept=len(data), truncated=counts[TRUNCATED],
        dropped_overlong=counts[DROPPED_OVERLONG], dropped_untrained=counts[DROPPED_UNTRAINED],
        longest=max(lengths, default=0), shortest=min(lengths, default=0),
    )
    return data, stats
