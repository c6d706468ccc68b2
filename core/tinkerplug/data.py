"""Data sources and the records read from them (the ``load_records`` hook's types).

The core names what to read (``DataSource``) and what it gets back (``Records``); reading a
format is a plugin's job. No heavy imports: plugins import these at start-up.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from tinkerplug.config import RunConfig


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


def train_sources(config: RunConfig) -> list[DataSource]:
    """The training sources: one, or the weighted sources of a mixture."""
    return [_source(s, "train", config) for s in config.data.sources("train")]


def heldout_source(config: RunConfig) -> DataSource | None:
    sources = config.data.sources("heldout")
    return _source(sources[0], "heldout", config) if sources else None


def _source(table: Any, role: str, config: RunConfig) -> DataSource:
    return DataSource(
        path=str(table.path), role=role, format=table.format or config.data.format, split=table.split, weight=table.weight
    )
