"""Chat JSONL records by random access, with errors that name the file and line.

Opening a file is one fast byte scan: it reads the file in big blocks, hashes them (the
content fingerprint) and finds the newlines with numpy, so a million-line file is indexed in
about a second and costs 16 bytes per record in memory (two int64 offsets), not a parsed dict
each. A record is parsed and checked when it is read; ``check_all`` reads them all (the run
does that in a background thread while the model loads, so a bad line still fails before
step 0 for all but very big files).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

from tinkerplug.errors import DataError

ROLES = ("system", "user", "assistant", "tool")
JSONL_HINT = 'JSONL is one JSON object per line: {"messages": [{"role": "user", "content": "..."}, ...]}'
BLOCK = 16 << 20  # bytes read (and hashed) at a time
WHITESPACE = b" \t\r\n\x0b\x0c"


class JsonlRecords:
    """The records of one chat JSONL file: ``len``, ``records[i]`` (a checked dict),
    ``where(i)`` ("FILE:LINE") and ``fingerprint()`` (a hash of the file's bytes).

    Blank lines are skipped. Reads use ``os.pread``, so
    several threads may read records at once.
    """

    def __init__(self, path: Path, what: str = "data", convert: Callable[[Any, str], dict[str, Any]] | None = None):
        """``convert(row, where)`` turns a parsed line into a record (another record format:
        ``formats.py``); the default checks a chat record."""
        if not path.is_file():
            raise DataError(f"{what} file {path} not found", hint="paths in the config are relative to the config file")
        self.path = path
        self._convert = convert or _checked
        self.what = what
        self._starts, self._ends, self._lines, self._fingerprint = _scan(path)
        if len(self._starts) == 0:
            raise DataError(f"{what} file {path} has no records", hint='add one {"messages": [...]} object per line')
        self._fd = os.open(path, os.O_RDONLY)

    def __len__(self) -> int:
        return len(self._starts)

    def fingerprint(self) -> str:
        return self._fingerprint

    def line(self, index: int) -> int:
        """The 1-based line number of record ``index``."""
        return int(self._lines[index]) if self._lines is not None else index + 1

    def where(self, index: int) -> str:
        return f"{self.path}:{self.line(index)}"

    def raw(self, index: int) -> bytes:
        start, end = int(self._starts[index]), int(self._ends[index])
        return os.pread(self._fd, end - start, start)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self):
            raise IndexError(index)
        where = self.where(index)
        record = parse_line(self.raw(index), where, self._starts[index] == 0, self._convert)
        assert record is not None  # blank lines are not records
        return record

    def check_all(self, stop: Any = None) -> None:
        """Parse and check every record (raises the first ``DataError``); ``stop`` (an Event)
        ends it early. A background thread runs this so a bad line deep in a big file is
        reported within seconds rather than when training reaches it."""
        for index in range(len(self)):
            if stop is not None and index % 4096 == 0 and stop.is_set():
                return
            self[index]

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001 - interpreter shutdown
            pass


def _scan(path: Path) -> tuple[Any, Any, Any, str]:
    """(record starts, record ends, line numbers or None when no line is blank, fingerprint)."""
    import numpy as np

    digest = hashlib.blake2b(digest_size=16)
    newlines = []
    size = 0
    with path.open("rb", buffering=0) as f:
        while block := f.read(BLOCK):
            digest.update(block)
            newlines.append(np.flatnonzero(np.frombuffer(block, dtype=np.uint8) == 10) + size)
            size += len(block)
    ends = np.concatenate(newlines) if newlines else np.zeros(0, dtype=np.int64)
    ends = ends.astype(np.int64)
    if size and (len(ends) == 0 or ends[-1] != size - 1):
        ends = np.append(ends, size)  # a last line with no newline
    starts = np.concatenate([[0], ends[:-1] + 1]).astype(np.int64) if len(ends) else ends
    keep = _not_blank(path, starts, ends)
    lines = None
    if not keep.all():
        lines = (np.flatnonzero(keep) + 1).astype(np.int64)
        starts, ends = starts[keep], ends[keep]
    return starts, ends, lines, f"blake2b:{digest.hexdigest()}:{size}"


def _not_blank(path: Path, starts: Any, ends: Any) -> Any:
    """A mask of the lines with something on them. Only empty lines and lines that start
    with whitespace (rare in JSONL) are looked at closer."""
    import numpy as np

    first = np.zeros(len(starts), dtype=np.uint8)
    with path.open("rb", buffering=0) as f:  # a second pass, from the page cache
        offset = 0
        while block := f.read(BLOCK):
            lo, hi = np.searchsorted(starts, [offset, offset + len(block)])
            first[lo:hi] = np.frombuffer(block, dtype=np.uint8)[starts[lo:hi] - offset]
            offset += len(block)
    keep = ends > starts
    suspects = np.flatnonzero(keep & np.isin(first, np.frombuffer(WHITESPACE, dtype=np.uint8)))
    if len(suspects):
        with path.open("rb") as f:
            for index in suspects:
                f.seek(int(starts[index]))
                keep[index] = bool(f.read(int(ends[index] - starts[index])).strip())
    return keep


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
