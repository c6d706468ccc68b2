"""Hugging Face data sets: ``hf:NAME[:CONFIG]`` with ``split``, through the ``datasets`` package.

NAME is a ``save_to_disk`` directory, a local dataset directory or script, or a hub name
(from the cache when offline). With ``HF_HUB_OFFLINE`` set, a hub name that is not cached
fails at once, before ``datasets`` is imported (it would otherwise retry the network).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from tinkerplug.errors import DataError
from tinkerplug_data.records import FormattedRecords

PREFIX = "hf:"
DEFAULT_SPLITS = {"train": ("train",), "heldout": ("validation", "test", "eval", "dev")}


def parse_spec(spec: str) -> tuple[str, str | None]:
    """``hf:NAME[:CONFIG]`` -> (NAME, CONFIG)."""
    name, _, config = spec[len(PREFIX):].partition(":")
    if not name:
        raise DataError(f"data source {spec!r}: no dataset name", hint="write hf:NAME or hf:NAME:CONFIG, e.g. hf:HuggingFaceH4/no_robots")
    return name, config or None


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def is_cached(name: str) -> bool:
    """Whether ``datasets`` or the hub cache holds anything for hub dataset ``name``."""
    home = Path(os.environ.get("HF_HOME", Path.home() / ".cache" / "huggingface"))
    datasets_cache = Path(os.environ.get("HF_DATASETS_CACHE", home / "datasets"))
    hub_cache = Path(os.environ.get("HF_HUB_CACHE", os.environ.get("HUGGINGFACE_HUB_CACHE", home / "hub")))
    return (datasets_cache / name.replace("/", "___")).is_dir() or (hub_cache / f"datasets--{name.replace('/', '--')}").is_dir()


def read_hf(spec: str, split: str | None, fmt: str | None, role: str, what: str) -> Any:
    name, config = parse_spec(spec)
    local = Path(name).expanduser()
    if not local.exists() and offline() and not is_cached(name):
        raise DataError(
            f"{what} {spec!r}: HF_HUB_OFFLINE is set and dataset {name!r} is neither a local directory nor in the cache",
            hint="download it once with the network (unset HF_HUB_OFFLINE), or point hf: at a save_to_disk directory",
        )
    dataset = _open(str(local) if local.exists() else name, config, spec, what)
    dataset = _pick_split(dataset, split, role, spec)
    label = f"{spec}[{split or 'default'}]"
    return FormattedRecords(
        dataset, lambda i: f"{label} row {i + 1}", str(getattr(dataset, "_fingerprint", "") or label),
        fmt, what, label, columns=dataset.column_names, iter_rows=lambda: _iter(dataset),
    )


def _open(name: str, config: str | None, spec: str, what: str) -> Any:
    import datasets

    datasets.logging.set_verbosity_error()
    saved = Path(name)
    try:
        if (saved / "dataset_dict.json").is_file() or (saved / "state.json").is_file():
            return datasets.load_from_disk(str(saved))
        return datasets.load_dataset(name, config)
    except Exception as exc:  # noqa: BLE001 - datasets raises many types (ConnectionError, FileNotFoundError, ...)
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataError(
            f"{what} {spec!r}: could not load dataset {name!r}: {type(exc).__name__}: {message}",
            hint="hf:NAME is a save_to_disk dir, a local dataset dir, or a hub name (needs the network or the cache)",
        ) from None


def _pick_split(dataset: Any, split: str | None, role: str, spec: str) -> Any:
    splits = getattr(dataset, "keys", None)
    if splits is None:  # a single Dataset: a split would have been chosen when saving
        if split is not None and getattr(dataset, "split", None) not in (None, split):
            raise DataError(f"{spec}: this dataset is the {dataset.split!r} split only; split {split!r} is not in it")
        return dataset
    names = list(splits())
    choice = split or next((s for s in DEFAULT_SPLITS.get(role, ()) if s in names), None)
    if choice is None or choice not in names:
        asked = f"has no split {split!r}" if split else "has several splits"
        raise DataError(f"{spec} {asked}; it has: {', '.join(names)}", hint="set split = \"...\" in the data source")
    return dataset[choice]


def _iter(dataset: Any) -> Any:
    for batch in dataset.iter(batch_size=1024):
        keys = list(batch)
        for values in zip(*(batch[k] for k in keys)):
            yield dict(zip(keys, values))
