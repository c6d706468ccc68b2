"""StableReinforce's sampling record: what a sampler recorded per ``sequence_id`` (with
``record_stability_info=True``), and the datums' provenance spans resolved against it.

The record of one sequence is its request's prompt, its sampled tokens and the sampler's own
logprob of each sampled token (float32, as the sampler computed it). A training request names
records through ``Datum.model_input_spans`` / ``loss_fn_input_spans``; ``resolve_provenance``
checks every claim (known id, of this session, inside the sequence, the same tokens) and gives
each datum the recorded sampler logprob of every target position a sampled span covers.

The store is bounded two ways (the Tinker docs: a sequence "can be trained on for one day
after sampling; each training request that uses a sequence restarts that day"):
- age: a record unused for ``MAX_AGE_S`` (one day) is dropped;
- size: past ``MAX_TOKENS`` stored tokens (prompt tokens once per sampling request, plus
  every sampled token), the least recently used records are dropped first.
A dropped record is an unknown ``sequence_id`` to a later training request.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import numpy as np

MAX_AGE_S = 24 * 3600.0
MAX_TOKENS = 4_000_000  # ~12 bytes a token (int32 id, float32 logprob, shared prompts): ~50 MB


@dataclass
class Record:
    owner: str | None  # the session that sampled it (serve); None in-process
    prompt: np.ndarray  # int32, shared by the samples of one request
    tokens: np.ndarray  # int32 sampled tokens
    logprobs: np.ndarray  # float32, the sampler's logprob of each sampled token
    size: int  # tokens this record adds to the store
    used: float


class StabilityStore:
    """Records by ``sequence_id``, least recently used first; thread-safe."""

    def __init__(self, max_tokens: int = MAX_TOKENS, max_age_s: float = MAX_AGE_S, clock: Any = time.monotonic):
        self.max_tokens, self.max_age_s, self._clock = max_tokens, max_age_s, clock
        self._records: OrderedDict[str, Record] = OrderedDict()
        self._tokens = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._records)

    def put(self, owner: str | None, prompt: list[int], sequences: list[tuple[str, list[int], list[float]]]) -> None:
        """Record one sampling request: its prompt and each ``(sequence_id, tokens, logprobs)``."""
        shared = np.asarray(prompt, dtype=np.int32)
        with self._lock:
            for index, (sequence_id, tokens, logprobs) in enumerate(sequences):
                size = len(tokens) + (len(prompt) if index == 0 else 0)
                record = Record(owner, shared, np.asarray(tokens, dtype=np.int32),
                                np.asarray(logprobs, dtype=np.float32), size, self._clock())
                self._records[sequence_id] = record
                self._tokens += size
            self._evict()

    def get(self, sequence_id: str, owner: str | None) -> Record | None:
        """The record, its day restarted; None if unknown, expired or another session's."""
        with self._lock:
            self._evict()
            record = self._records.get(sequence_id)
            if record is None or record.owner != owner:
                return None
            record.used = self._clock()
            self._records.move_to_end(sequence_id)
            return record

    def drop(self, owner: str | None) -> None:
        """Forget every record of ``owner`` (its session finished)."""
        with self._lock:
            for sequence_id in [i for i, r in self._records.items() if r.owner == owner]:
                self._tokens -= self._records.pop(sequence_id).size

    def _evict(self) -> None:
        now = self._clock()
        while self._records:
            sequence_id, oldest = next(iter(self._records.items()))
            if self._tokens <= self.max_tokens and now - oldest.used <= self.max_age_s:
                return
            del self._records[sequence_id]
            self._tokens -= oldest.size


@dataclass
class Resolved:
    """Per target position of one datum: the recorded sampler logprob and whether it is trained."""

    sampler_logprobs: np.ndarray  # float32; 0 where not sampled
    sampled: np.ndarray  # float32 mask: 1 where a SampledProvenanceSpan covers the target


def resolve_provenance(store: StabilityStore, owner: str | None, data: list[Any]) -> list[Resolved]:
    """Check every datum's spans against the store; raise ``ValueError`` naming the datum."""
    out = []
    for index, datum in enumerate(data):
        if datum.model_input_spans is None or datum.loss_fn_input_spans is None:
            raise ValueError(
                f"datum {index}: stable_reinforce needs provenance on every datum: sample with "
                "record_stability_info=True and name the sampled sequences with "
                "Datum.with_provenance(model_input=[...], loss_fn_inputs=[...])"
            )
        _resolve_field(store, owner, index, "model_input_spans", datum.model_input_spans, datum.model_input.to_ints())
        targets = datum.loss_fn_inputs["target_tokens"].to_numpy().reshape(-1)
        out.append(_resolve_field(store, owner, index, "loss_fn_input_spans", datum.loss_fn_input_spans, targets))
    return out


def _resolve_field(store: StabilityStore, owner: str | None, index: int, field: str, spans: list[Any], tokens: Any) -> Resolved:
    """Walk the runs tiling ``tokens``; targets under prompt spans are not compared (they carry
    no sampled token, and the cookbook pads them), every other position must match."""
    from tinker import types

    tokens = np.asarray(tokens).reshape(-1)
    covered = sum(span.length for span in spans)
    if covered != len(tokens):
        raise ValueError(f"datum {index}: {field} cover {covered} positions, the field has {len(tokens)}; the runs must tile it")
    logprobs, sampled = np.zeros(len(tokens), np.float32), np.zeros(len(tokens), np.float32)
    at = 0
    for j, span in enumerate(spans):
        where = f"datum {index}: {field}[{j}]"
        record = store.get(span.sequence_id, owner)
        if record is None:
            raise ValueError(f"{where} names sequence_id {span.sequence_id!r}, which this session has not sampled with "
                             "record_stability_info=True (or its record expired: unused for a day, or evicted)")
        is_sampled = isinstance(span, types.SampledProvenanceSpan)
        source = record.tokens if is_sampled else record.prompt
        kind = f"the {'sampled tokens' if is_sampled else 'prompt'} of sequence {span.sequence_id!r}"
        if span.offset + span.length > len(source):
            raise ValueError(f"{where} covers positions {span.offset}..{span.offset + span.length - 1} of {kind}, "
                             f"which has {len(source)}")
        claimed, run = source[span.offset : span.offset + span.length], tokens[at : at + span.length]
        if (is_sampled or field == "model_input_spans") and not np.array_equal(claimed, run):
            k = int(np.flatnonzero(claimed != run)[0])
            raise ValueError(f"{where}: position {at + k} holds token {int(run[k])}, but {kind} has {int(claimed[k])} there")
        if is_sampled:
            logprobs[at : at + span.length] = record.logprobs[span.offset : span.offset + span.length]
            sampled[at : at + span.length] = 1.0
        at += span.length
    return Resolved(logprobs, sampled)
