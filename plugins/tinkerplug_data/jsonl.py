"""Chat JSONL records, with errors that name the file and line.

A file is read once when opened: every line is checked (a bad record fails in the prepare
phase, not at step 500) and its byte offset kept; records are read again from their offsets
when asked for, so memory holds offsets, not parsed records.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Callable

from tinkerplug.errors import DataError

ROLES = ("system", "user", "assistant", "tool")
JSONL_HINT = 'JSONL is one JSON object per line: {"messages": [{"role": "user", "content": "..."}, ...]}'


class JsonlRecords:
    """The records of one chat JSONL file (``tinkerplug.data.Records``)."""

    def __init__(self, path: Path, what: str = "data", convert: Callable[[Any, str], dict[str, Any]] | None = None):
        """``convert(row, where)`` turns a parsed line into a record (another record format:
        ``formats.py``); the default checks a chat record."""
        if not path.is_file():
            raise DataError(f"{what} file {path} not found", hint="paths in the config are relative to the config file")
        self.path = path
        self._convert = convert or _checked
        self._offsets: list[int] = []
        self._lines: list[int] = []
        digest = hashlib.sha256()
        with path.open("rb") as f:  # bytes: a line that is not UTF-8 is reported with its number
            offset = 0
            for number, raw in enumerate(f, 1):
                digest.update(raw)
                if parse_line(raw, f"{path}:{number}", number == 1, self._convert) is not None:
                    self._offsets.append(offset)
                    self._lines.append(number)
                offset += len(raw)
        self._fingerprint = digest.hexdigest()
        if not self._offsets:
            raise DataError(f"{what} file {path} has no records", hint='add one {"messages": [...]} object per line')

    def __len__(self) -> int:
        return len(self._offsets)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self._offsets):
            raise IndexError(index)
        with self.path.open("rb") as f:
            f.seek(self._offsets[index])
            record = parse_line(f.readline(), self.where(index), self._offsets[index] == 0, self._convert)
        assert record is not None  # checked when the file was opened
        return record

    def where(self, index: int) -> str:
        return f"{self.path}:{self._lines[index]}"

    def fingerprint(self) -> str:
        return self._fingerprint


def parse_line(
    raw: bytes, where: str, first: bool = False, convert: Callable[[Any, str], dict[str, Any]] | None = None
) -> dict[str, Any] | None:
    """One line as a checked record (``convert``, default: a chat record); ``None`` for a blank line."""
    try:
        line = raw.decode("utf-8-sig" if first else "utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})", hint=JSONL_HINT) from None
    if not line.strip():
        return None
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise DataError(f"{where}: not valid JSON: {exc.msg} (column {exc.colno})", hint=JSONL_HINT) from None
    return (convert or _checked)(record, where)


def _checked(record: Any, where: str) -> dict[str, Any]:
    check_record(record, where)
    return record


def check_record(record: Any, where: str) -> None:
    if not isinstance(record, dict) or "messages" not in record:
        raise DataError(f'{where}: record has no "messages" list', hint=JSONL_HINT)
    messages = record["messages"]
    if not isinstance(messages, list) or not messages:
        raise DataError(f'{where}: "messages" must be a non-empty list')
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise DataError(f'{where}: message {i} needs "role" and "content"')
        if message["role"] not in ROLES:
            raise DataError(
                f"{where}: message {i} has unknown role {message['role']!r}",
                hint=f"roles are {', '.join(ROLES)}",
            )
