"""``load_records`` for files, directories and Hugging Face data sets (the first-party data
reader), and ``render_example`` for plain-text records."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import tinkerplug
from tinkerplug.data import DataSource
from tinkerplug.errors import DataError


@tinkerplug.hookimpl(trylast=True)
def load_records(source: DataSource, config: Any) -> Any:
    # The reader of last resort: a file of unknown type is read as JSONL, so a file named
    # data.txt still gets line-numbered errors. Specs other than hf: belong to other plugins.
    from tinkerplug.data import is_spec

    if is_spec(source.path):
        if not source.path.startswith("hf:"):
            return None
        from tinkerplug_data.hf import read_hf

        return read_hf(source.path, source.split, source.format, source.role, source.what)
    path = Path(source.path)
    if path.is_dir():
        return _read_directory(path, source)
    return read_file(path, source.format, source.what)


def read_file(path: Path, fmt: str | None, what: str) -> Any:
    from tinkerplug_data import files

    kind = files.file_type(path)
    if kind != "jsonl" and kind is not None and not path.is_file():
        raise DataError(f"{what} file {path} not found", hint="paths in the config are relative to the config file")
    if kind == "json":
        return files.read_json(path, fmt, what, read_jsonl)
    if kind == "csv":
        return files.read_csv(path, fmt, what)
    if kind == "parquet":
        return files.read_parquet(path, fmt, what)
    if kind == "arrow":
        return files.read_arrow(path, fmt, what)
    return read_jsonl(path, fmt, what)


def read_jsonl(path: Path, fmt: str | None, what: str) -> Any:
    from tinkerplug_data.formats import RecordConverter
    from tinkerplug_data.jsonl import JsonlRecords

    records = JsonlRecords(path, what, convert=RecordConverter(fmt, str(path)))
    records[0]  # the format is detected from the first record, whatever order reads come in later
    return records


def _read_directory(path: Path, source: DataSource) -> Any:
    if (path / "dataset_dict.json").is_file() or (path / "state.json").is_file():  # datasets' save_to_disk
        from tinkerplug_data.hf import read_hf

        return read_hf(f"hf:{path}", source.split, source.format, source.role, source.what)
    from tinkerplug_data.files import read_directory

    return read_directory(path, lambda p: read_file(p, source.format, source.what), source.what)


@tinkerplug.hookimpl(tryfirst=True)
def render_example(example: Mapping[str, Any], renderer: Any, config: Any) -> Any:
    # Text records only; chat records go on to the renderer's plugin (cookbook).
    if "messages" in example or "text" not in example:
        return None
    from tinkerplug_data.text import text_datum

    return text_datum(example["text"], renderer.tokenizer)
