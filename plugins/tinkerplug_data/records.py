"""Records (``tinkerplug.data.Records``) over rows of any reader, in one record format.

Rows are converted on access, so memory holds the rows as read (an Arrow table stays
columnar, or memory-mapped). Every row is converted once when the source is opened: a bad
record fails before the run starts, naming its file and row.
"""

from __future__ import annotations

import hashlib
from typing import Any, Callable, Iterable, Sequence

from tinkerplug.errors import DataError
from tinkerplug_data.formats import FORMAT_HINT, FORMATS, check_format, detect_format, to_record


class FormattedRecords:
    """The rows of one file (or data set) as chat/text records.

    ``rows`` is random access (``len``, ``rows[i]`` a dict); ``iter_rows`` (default: index
    by index) walks them fast for the check; ``where(i)`` names row ``i``; ``columns`` the
    keys format detection looks at (default: the first row's).
    """

    def __init__(
        self,
        rows: Sequence[Any],
        where: Callable[[int], str],
        fingerprint: str,
        fmt: str | None,
        what: str,
        label: str,
        columns: Iterable[str] | None = None,
        iter_rows: Callable[[], Iterable[Any]] | None = None,
    ):
        if len(rows) == 0:
            raise DataError(f"{what} file {label} has no records", hint="add records to it, or point data at another file")
        self._rows, self._where, self._fingerprint = rows, where, fingerprint
        if fmt is not None:
            self.format = check_format(fmt, label)
            _check_columns(self.format, columns, label)
        else:
            first = rows[0]
            self.format = detect_format(columns if columns is not None else (first if isinstance(first, dict) else {}), where(0))
        for index, row in enumerate(iter_rows() if iter_rows else rows):
            to_record(row, self.format, where(index))

    def __len__(self) -> int:
        return len(self._rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < len(self._rows):
            raise IndexError(index)
        return to_record(self._rows[index], self.format, self._where(index))

    def where(self, index: int) -> str:
        return self._where(index)

    def fingerprint(self) -> str:
        return self._fingerprint


def _check_columns(fmt: str, columns: Iterable[str] | None, label: str) -> None:
    """A table (Parquet, CSV, a data set) lacking a column its format needs: said once, by name."""
    if columns is None:
        return
    columns = list(columns)
    missing = [k for k in FORMATS[fmt] if k not in columns]
    if missing:
        raise DataError(
            f"{label}: format {fmt!r} needs column {', '.join(map(repr, missing))}; its columns: {', '.join(columns)}",
            hint=FORMAT_HINT,
        )


class ConcatRecords:
    """Several sources (the files of a directory) read as one, in order."""

    def __init__(self, parts: list[Any]):
        self.parts = parts
        self._starts, total = [], 0
        for part in parts:
            self._starts.append(total)
            total += len(part)
        self._len = total

    def _locate(self, index: int) -> tuple[Any, int]:
        if not 0 <= index < self._len:
            raise IndexError(index)
        import bisect

        k = bisect.bisect_right(self._starts, index) - 1
        return self.parts[k], index - self._starts[k]

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, index: int) -> dict[str, Any]:
        part, local = self._locate(index)
        return part[local]

    def where(self, index: int) -> str:
        part, local = self._locate(index)
        return part.where(local)

    def fingerprint(self) -> str:
        return hashlib.sha256("".join(p.fingerprint() for p in self.parts).encode()).hexdigest()


def file_digest(path: Any) -> str:
    """sha256 of a file's bytes, read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
