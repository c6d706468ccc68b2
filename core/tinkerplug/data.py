"""Reading chat JSONL records, with errors that name the file and line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tinkerplug.errors import DataError

ROLES = ("system", "user", "assistant", "tool")
JSONL_HINT = 'JSONL is one JSON object per line: {"messages": [{"role": "user", "content": "..."}, ...]}'


def read_chat_jsonl(path: Path, what: str = "data") -> list[dict[str, Any]]:
    """Return the records of a chat JSONL file; blank lines are skipped.

    Each record is ``{"messages": [{"role": ..., "content": ...}, ...]}``; extra keys stay.
    """
    if not path.is_file():
        raise DataError(f"{what} file {path} not found", hint="paths in the config are relative to the config file")
    records = []
    with path.open("rb") as f:  # bytes: a line that is not UTF-8 is reported with its number
        for number, raw in enumerate(f, 1):
            where = f"{path}:{number}"
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                raise DataError(f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})", hint=JSONL_HINT) from None
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{where}: not valid JSON: {exc.msg} (column {exc.colno})", hint=JSONL_HINT) from None
            check_record(record, where)
            records.append(record)
    if not records:
        raise DataError(f"{what} file {path} has no records", hint='add one {"messages": [...]} object per line')
    return records


def check_record(record: Any, where: str) -> None:
    if not isinstance(record, dict) or "messages" not in record:
        raise DataError(
            f'{where}: record has no "messages" list',
            hint=JSONL_HINT,
        )
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
