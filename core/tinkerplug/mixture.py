"""Several training sources as one: each source's records repeated or subsampled by its weight.

A source of N records with weight w gives round(N × w) examples per epoch: every record
floor(w) times, plus a subset of the rest drawn once from ``seed`` and the source's position
(weight 1 is the source as is, 2 twice over, 0.5 a fixed half). The batch plan then shuffles
the mixture like any data set, so a mixture is as reproducible as a single file.
"""

from __future__ import annotations

import hashlib
import random
from array import array
from typing import Any

from tinkerplug.errors import ConfigError


class MixtureRecords:
    """``tinkerplug.data.Records`` over (source, records) pairs, mixed by the sources' weights."""

    def __init__(self, parts: list[tuple[Any, Any]], seed: int):
        self.parts = parts
        self._part, self._local = array("I"), array("Q")
        self.counts: list[dict[str, Any]] = []
        for k, (source, records) in enumerate(parts):
            chosen = _choose(len(records), source.weight, random.Random(f"{seed}:{k}"))
            if not chosen:
                raise ConfigError(
                    f"data.train[{k}] {source.path}: weight {source.weight} keeps no example of its {len(records)} records",
                    hint="raise the weight (examples per epoch = records × weight, rounded)",
                )
            self._part.extend([k] * len(chosen))
            self._local.extend(chosen)
            self.counts.append({"path": source.path, "weight": source.weight, "records": len(records), "examples": len(chosen)})
        digest = hashlib.sha256(str(seed).encode())
        for source, records in parts:
            digest.update(f"{source.weight}:{records.fingerprint()}".encode())
        self._fingerprint = digest.hexdigest()

    def __len__(self) -> int:
        return len(self._part)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.parts[self._part[index]][1][self._local[index]]

    def where(self, index: int) -> str:
        return self.parts[self._part[index]][1].where(self._local[index])

    def fingerprint(self) -> str:
        return self._fingerprint


def _choose(n: int, weight: float, rng: random.Random) -> list[int]:
    """round(n × weight) indices of range(n): whole passes, then a seeded subset, in order."""
    total = round(n * weight)
    whole, rest = divmod(total, n) if n else (0, 0)
    return [i for _ in range(whole) for i in range(n)] + sorted(rng.sample(range(n), rest))


def describe(counts: list[dict[str, Any]]) -> str:
    """``a.jsonl 1000 records × 1 = 1000, b.parquet 200 × 2 = 400`` for the start-up report."""
    parts = [f"{c['path']} {c['records']} records × {c['weight']:g} = {c['examples']}" for c in counts]
    return "; ".join(parts)
