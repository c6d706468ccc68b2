"""Readers for JSON, CSV, Parquet and Arrow files and for directories of data files.

Each returns ``Records`` in the source's record format (``formats.py``). pyarrow is imported
only when a Parquet or Arrow file is read.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Callable, Iterator

from tinkerplug.errors import DataError
from tinkerplug_data.records import ConcatRecords, FormattedRecords, file_digest

FILE_TYPES = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet",
              ".arrow": "arrow", ".feather": "arrow", ".ipc": "arrow"}
JSON_HINT = 'a .json file holds one list of records: [{"messages": [...]}, ...] (or JSONL: one record per line)'


def file_type(path: Path) -> str | None:
    return FILE_TYPES.get(path.suffix.lower())


def read_json(path: Path, fmt: str | None, what: str, read_jsonl: Callable[..., Any]) -> Any:
    """A JSON list of records (or an object holding one such list); JSON Lines named .json
    goes to the JSONL reader, which reports its lines."""
    text = _text(path, JSON_HINT)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data" and text.lstrip().startswith("{"):
            return read_jsonl(path, fmt, what)
        raise DataError(f"{path}:{exc.lineno}: not valid JSON: {exc.msg} (column {exc.colno})", hint=JSON_HINT) from None
    if isinstance(data, dict):
        lists = [v for v in data.values() if isinstance(v, list)]
        if len(lists) != 1:
            raise DataError(f"{path}: a JSON object of records must hold exactly one list (found {len(lists)})", hint=JSON_HINT)
        data = lists[0]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON list of records, got {type(data).__name__}", hint=JSON_HINT)
    return FormattedRecords(data, lambda i: f"{path} record {i + 1}", file_digest(path), fmt, what, str(path))


def read_csv(path: Path, fmt: str | None, what: str) -> Any:
    """A CSV file with a header row; cells are strings (list columns as JSON text)."""
    text = _text(path, "a CSV file is UTF-8 text with a header row")
    rows, lines = [], []
    reader = csv.DictReader(text.splitlines(keepends=True))
    try:
        for row in reader:
            lines.append(reader.line_num)
            rows.append({k: v for k, v in row.items() if k is not None})
    except csv.Error as exc:
        raise DataError(f"{path}:{reader.line_num}: not valid CSV: {exc}") from None
    return FormattedRecords(
        rows, lambda i: f"{path}:{lines[i]}", file_digest(path), fmt, what, str(path), columns=reader.fieldnames or ()
    )


class ArrowRows:
    """Rows of a pyarrow Table, one dict at a time; ``batches`` walks them fast."""

    def __init__(self, table: Any):
        self.table = table

    def __len__(self) -> int:
        return self.table.num_rows

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.table.slice(index, 1).to_pylist()[0]

    def batches(self) -> Iterator[dict[str, Any]]:
        for batch in self.table.to_batches(max_chunksize=1024):
            yield from batch.to_pylist()


def read_parquet(path: Path, fmt: str | None, what: str) -> Any:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise DataError(
            f"{path}: not a readable Parquet file ({type(exc).__name__}: {exc})",
            hint="is the file complete (a cut-off download?) and really Parquet? pyarrow.parquet.read_table must open it",
        ) from None
    return _table_records(table, path, fmt, what)


def read_arrow(path: Path, fmt: str | None, what: str) -> Any:
    """An Arrow IPC file (Feather v2) or stream (what ``datasets`` writes)."""
    import pyarrow as pa

    errors = []
    for opener in (pa.ipc.open_file, pa.ipc.open_stream):
        try:
            with pa.memory_map(str(path)) as source:
                table = opener(source).read_all()
            return _table_records(table, path, fmt, what)
        except pa.ArrowException as exc:
            errors.append(f"{type(exc).__name__}: {exc}")
    raise DataError(f"{path}: not a readable Arrow file ({errors[-1]})", hint="an Arrow IPC file or stream, e.g. from pyarrow or datasets") from None


def _table_records(table: Any, path: Path, fmt: str | None, what: str) -> Any:
    rows = ArrowRows(table)
    return FormattedRecords(
        rows, lambda i: f"{path} row {i + 1}", file_digest(path), fmt, what, str(path),
        columns=table.column_names, iter_rows=rows.batches,
    )


def data_files(directory: Path) -> list[Path]:
    """The data files under ``directory``, by path (hidden files and dirs skipped)."""
    return sorted(
        p for p in directory.rglob("*")
        if p.is_file() and file_type(p) and not any(part.startswith(".") for part in p.relative_to(directory).parts)
    )


def read_directory(directory: Path, read_one: Callable[[Path], Any], what: str) -> Any:
    files = data_files(directory)
    if not files:
        raise DataError(
            f"{what} directory {directory} has no data files",
            hint=f"it needs files ending in {', '.join(sorted(set(FILE_TYPES)))} (or a datasets save_to_disk dir)",
        )
    parts = [read_one(p) for p in files]
    return parts[0] if len(parts) == 1 else ConcatRecords(parts)


def _text(path: Path, hint: str) -> str:
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})", hint=hint) from None
