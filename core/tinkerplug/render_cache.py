"""Rendered examples on disk, so the next run (and a resume) renders nothing it rendered before.

One cache directory per *key*: the data's fingerprint, the renderer, the tokenizer and the
settings that change a rendered example (``max_length``, ``overlong``, ``train_on_what``,
``loss_reduction``, the hooks that render). Inside it, *shards*: each a directory of flat numpy
arrays (record numbers, a status and original length per record, token/target/weight arrays
and their offsets), opened as read-only memmaps, so a million cached examples cost a few
bytes of RAM each (the lookup tables), not Python objects.

A shard is written into a temporary directory and renamed into place when complete, and its
``done.json`` (written last) must agree with its arrays: a run killed mid-write leaves a
temporary directory that no later run reads (and that the next run clears away).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from tinkerplug.rundir import fsync_dir

CACHE_FORMAT = 1
FLUSH_EVERY = 4096  # examples kept in memory before they are written as a shard

KEPT, TRUNCATED, DROPPED_OVERLONG, DROPPED_UNTRAINED = 0, 1, 2, 3
_ARRAYS = ("records", "status", "lengths", "offsets", "tokens", "targets", "weights")


@dataclass
class RenderedExample:
    """One record after rendering, ``max_length``/``overlong`` and the loss reduction.
    A dropped example has empty arrays; ``length`` is always the rendered length."""

    status: int
    length: int
    tokens: Any  # int32 array: the model input
    targets: Any  # int32 array: target tokens, one per input token
    weights: Any  # float32 array: loss weights, already reduced

    @property
    def dropped(self) -> bool:
        return self.status >= DROPPED_OVERLONG


def cache_root() -> Path:
    """``$TINKERPLUG_CACHE_DIR`` or ``~/.cache/tinkerplug`` (``$XDG_CACHE_HOME`` respected)."""
    if os.environ.get("TINKERPLUG_CACHE_DIR"):
        return Path(os.environ["TINKERPLUG_CACHE_DIR"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "tinkerplug"


def cache_key(parts: dict[str, Any]) -> str:
    text = json.dumps({"format": CACHE_FORMAT, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def tokenizer_identity(tokenizer: Any) -> str:
    """Name, size and a hash of the vocabulary: a retrained tokenizer under the same name
    gets a new identity."""
    vocab = getattr(tokenizer, "get_vocab", lambda: {})()
    digest = hashlib.sha256(json.dumps(sorted(vocab.items())).encode()).hexdigest()[:16]
    name = getattr(tokenizer, "name_or_path", type(tokenizer).__name__)
    return f"{name}:{len(vocab)}:{digest}"


def open_render_cache(num_records: int, settings: dict[str, Any] | None, tokenizer: Any = None) -> "RenderCache":
    """The cache of the key ``settings`` (everything a rendered example depends on but the
    tokenizer) and ``tokenizer`` make, under ``cache_root()``; ``settings`` None: in memory
    only (records without a fingerprint, no tokenizer)."""
    if settings is None or tokenizer is None:
        return RenderCache(None, num_records)
    parts = {**settings, "tokenizer": tokenizer_identity(tokenizer)}
    return RenderCache(cache_root() / "rendered" / cache_key(parts), num_records, meta=parts)


class RenderCache:
    """The cache for one key, for a data source of ``num_records`` records (``directory``
    None: in memory only). Thread-safe: the render-ahead thread writes while the loop reads."""

    def __init__(self, directory: Path | None, num_records: int, meta: dict[str, Any] | None = None):
        import numpy as np

        self.directory = directory
        self.num_records = num_records
        self._lock = threading.Lock()
        self._pending: dict[int, RenderedExample] = {}
        self._shards: list[dict[str, Any]] = []
        self._shard_of = np.full(num_records, -1, dtype=np.int32)
        self._row_of = np.zeros(num_records, dtype=np.int32)
        self._status = np.full(num_records, 255, dtype=np.uint8)
        self._lengths = np.zeros(num_records, dtype=np.int32)
        self.rendered_now = 0  # examples this process rendered (not read from the cache)
        if directory is None:  # in memory only: nothing is written
            return
        directory.mkdir(parents=True, exist_ok=True)
        if meta is not None and not (directory / "meta.json").exists():
            _write_json(directory / "meta.json", {**meta, "num_records": num_records})
        _clear_dead_temporaries(directory)
        for shard in sorted(directory.glob("shard-*")):
            self._map(shard)

    def _map(self, shard: Path) -> None:
        arrays = _open_shard(shard, self.num_records)
        if arrays is None:
            return  # not a shard this code wrote whole: ignored, rendered again
        number = len(self._shards)
        self._shards.append(arrays)
        records = arrays["records"]
        self._shard_of[records] = number
        self._row_of[records] = range(len(records))
        self._status[records] = arrays["status"]
        self._lengths[records] = arrays["lengths"]

    def get(self, index: int) -> RenderedExample | None:
        with self._lock:
            pending = self._pending.get(index)
            if pending is not None:
                return pending
            number = int(self._shard_of[index])
            if number < 0:
                return None
            shard, row = self._shards[number], int(self._row_of[index])
        lo, hi = int(shard["offsets"][row]), int(shard["offsets"][row + 1])
        return RenderedExample(
            status=int(shard["status"][row]),
            length=int(shard["lengths"][row]),
            tokens=shard["tokens"][lo:hi],
            targets=shard["targets"][lo:hi],
            weights=shard["weights"][lo:hi],
        )

    def example(self, index: int, render: Callable[[int], RenderedExample]) -> RenderedExample:
        """Record ``index`` from the cache, or ``render(index)`` kept in it (a read-through cache)."""
        cached = self.get(index)
        if cached is not None:
            return cached
        example = render(index)
        self.put(index, example)
        return example

    def fill(self, render: Callable[[int], RenderedExample]) -> None:
        """Render every record not in the cache yet, and write them."""
        for index in self.missing():
            self.example(index, render)
        self.flush()

    def put(self, index: int, example: RenderedExample) -> None:
        with self._lock:
            self._pending[index] = example
            self._status[index] = example.status
            self._lengths[index] = example.length
            self.rendered_now += 1
            full = len(self._pending) >= FLUSH_EVERY and self.directory is not None
        if full:
            self.flush()

    def flush(self) -> None:
        """Write the examples rendered since the last flush as one shard (atomically)."""
        with self._lock:
            if self.directory is None:
                return
            pending, self._pending = self._pending, {}
            if not pending:
                return
            shard = _write_shard(self.directory, pending)
            self._map(shard)

    def counts(self) -> dict[str, int]:
        """How many records are rendered, kept, truncated and dropped (each reason), and the
        shortest / longest rendered length, over every record rendered so far."""
        import numpy as np

        with self._lock:
            known = self._status != 255
            by_status = np.bincount(self._status[known], minlength=4)
            lengths = self._lengths[known]
        return {
            "rendered": int(known.sum()),
            "kept": int(by_status[KEPT] + by_status[TRUNCATED]),
            "truncated": int(by_status[TRUNCATED]),
            "dropped_overlong": int(by_status[DROPPED_OVERLONG]),
            "dropped_untrained": int(by_status[DROPPED_UNTRAINED]),
            "shortest": int(lengths.min()) if len(lengths) else 0,
            "longest": int(lengths.max()) if len(lengths) else 0,
        }

    def missing(self) -> Iterable[int]:
        """The records not rendered yet, in order."""
        import numpy as np

        with self._lock:
            return np.flatnonzero(self._status == 255).tolist()


def _write_shard(directory: Path, pending: dict[int, RenderedExample]) -> Path:
    import numpy as np

    records = np.array(sorted(pending), dtype=np.int64)
    examples = [pending[int(i)] for i in records]
    sizes = np.array([len(e.tokens) for e in examples], dtype=np.int64)
    arrays = {
        "records": records,
        "status": np.array([e.status for e in examples], dtype=np.uint8),
        "lengths": np.array([e.length for e in examples], dtype=np.int32),
        "offsets": np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64),
        "tokens": _concat([e.tokens for e in examples], np.int32),
        "targets": _concat([e.targets for e in examples], np.int32),
        "weights": _concat([e.weights for e in examples], np.float32),
    }
    name = f"shard-{int(records[0]):09d}-{os.getpid()}-{threading.get_ident() % 10**6}-{len(records)}-{os.urandom(3).hex()}"
    tmp = directory / f".tmp-{os.getpid()}-{name}"
    tmp.mkdir()
    for key, array in arrays.items():
        with (tmp / f"{key}.npy").open("wb") as f:
            np.save(f, array)
            f.flush()
            os.fsync(f.fileno())
    # Written last: a shard whose done.json is missing or disagrees with its arrays is ignored.
    _write_json(tmp / "done.json", {"records": len(records), "tokens": int(arrays["offsets"][-1])})
    fsync_dir(tmp)
    final = directory / name
    os.rename(tmp, final)
    fsync_dir(directory)
    return final


def _open_shard(shard: Path, num_records: int) -> dict[str, Any] | None:
    import numpy as np

    try:
        done = json.loads((shard / "done.json").read_text())
        arrays = {key: np.load(shard / f"{key}.npy", mmap_mode="r") for key in _ARRAYS}
    except (OSError, ValueError):
        return None
    m, tokens = done.get("records"), done.get("tokens")
    consistent = (
        all(len(arrays[k]) == m for k in ("records", "status", "lengths"))
        and len(arrays["offsets"]) == m + 1
        and all(len(arrays[k]) == tokens for k in ("tokens", "targets", "weights"))
        and m > 0
        and int(arrays["offsets"][-1]) == tokens
        and 0 <= int(arrays["records"].min()) <= int(arrays["records"].max()) < num_records
    )
    return arrays if consistent else None


def _concat(parts: list[Any], dtype: Any) -> Any:
    import numpy as np

    return np.concatenate([np.asarray(p, dtype=dtype) for p in parts]) if parts else np.zeros(0, dtype=dtype)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _clear_dead_temporaries(directory: Path) -> None:
    """Remove what killed runs left half-written (a live process's own temporaries stay)."""
    for tmp in directory.glob(".tmp-*"):
        try:
            pid = int(tmp.name.split("-")[1])
            os.kill(pid, 0)
        except ProcessLookupError:
            shutil.rmtree(tmp, ignore_errors=True)
        except (ValueError, IndexError, PermissionError):
            continue
