"""Data sources, the records read from them (the ``load_records`` hook's types), and the
check of every record.

The core names what to read (``DataSource``) and what it gets back (``Records``); reading a
format is a plugin's job. Every record is checked in a thread while the model loads (and, for
a big file, on into training), so a bad line is reported with its ``FILE:LINE``. No heavy
imports: plugins import these at start-up.
"""

from __future__ import annotations

import threading
from os import PathLike
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from tinkerplug.errors import DataError


@dataclass(frozen=True)
class DataSource:
    """One data set of a run, as the config names it."""

    path: str  # an absolute file or directory path, or a spec such as ``hf:NAME[:CONFIG]``
    role: str  # "train" | "heldout"
    format: str | None = None  # the record format (data.format); None: detected from the columns
    split: str | None = None
    weight: float = 1.0

    @property
    def what(self) -> str:
        """How messages name it: "training data" / "held-out data"."""
        return {"train": "training data", "heldout": "held-out data"}.get(self.role, f"{self.role} data")


def is_spec(path: str | PathLike[str]) -> bool:
    """``hf:NAME`` and the like: a scheme before the first ``/``, not a file path."""
    return ":" in str(path).split("/")[0]


@runtime_checkable
class Records(Protocol):
    """Random access to the records of a source; returned by ``load_records``."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict[str, Any]:
        """Record ``index`` (0-based) in chat form: ``{"messages": [...]}``."""
        ...

    def where(self, index: int) -> str:
        """Where record ``index`` comes from, for messages: ``"FILE:LINE"``."""
        ...

    def fingerprint(self) -> str:
        """A hash of the source's content (resume checks, caches)."""
        ...


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
