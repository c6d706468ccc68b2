"""``/metrics``: what the server is doing, in Prometheus' text format.

Counted here: HTTP requests per key, endpoint and status with their latency, and each
submitted request's time from submission to result per kind (``forward_backward``,
``optim_step``, ``asample``, ...). Read at scrape time: queue depth per key, sessions and models
per key, adapters resident per base model, and mixed-adapter batches run (``mixed.py``). Keys
appear by name only, never the key itself.
"""

from __future__ import annotations

import operator
import threading
from collections import Counter, deque
from typing import Any

WINDOW = 2048  # latencies kept per series for the quantiles


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.requests: Counter[tuple[str, str, int]] = Counter()  # (key name, endpoint, status)
        self.http_seconds: dict[str, deque[float]] = {}
        self.work_seconds: dict[str, deque[float]] = {}
        self.work_total: Counter[tuple[str, str]] = Counter()  # (kind, "ok" | "failed")

    def observe_http(self, key: str, endpoint: str, status: int, seconds: float) -> None:
        with self._lock:
            self.requests[(key, endpoint, status)] += 1
            self.http_seconds.setdefault(endpoint, deque(maxlen=WINDOW)).append(seconds)

    def observe_work(self, kind: str, failed: bool, seconds: float) -> None:
        with self._lock:
            self.work_total[(kind, "failed" if failed else "ok")] += 1
            self.work_seconds.setdefault(kind, deque(maxlen=WINDOW)).append(seconds)

    def render(self, state: Any) -> str:
        lines: list[str] = []
        with self._lock:
            _counter(lines, "tinkerplug_http_requests_total", "HTTP requests answered",
                     {(("key", k), ("endpoint", e), ("status", str(s))): n for (k, e, s), n in self.requests.items()})
            _quantiles(lines, "tinkerplug_http_request_seconds", "HTTP answer time (submitting routes answer at once)", "endpoint", self.http_seconds)
            _counter(lines, "tinkerplug_requests_done_total", "Submitted requests done, by kind and outcome",
                     {(("kind", k), ("outcome", o)): n for (k, o), n in self.work_total.items()})
            _quantiles(lines, "tinkerplug_request_seconds", "Submission to result, by request kind", "kind", self.work_seconds)
        _gauges(lines, state)
        return "\n".join(lines) + "\n"


def _labels(pairs: tuple[tuple[str, str], ...]) -> str:
    escaped = (f'{k}="{v.replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"' for k, v in pairs)
    return "{" + ",".join(escaped) + "}" if pairs else ""


def _counter(lines: list[str], name: str, doc: str, values: dict) -> None:
    lines += [f"# HELP {name} {doc}", f"# TYPE {name} counter"]
    lines += [f"{name}{_labels(labels)} {n}" for labels, n in sorted(values.items())]


def _quantiles(lines: list[str], name: str, doc: str, label: str, series: dict[str, deque[float]]) -> None:
    lines += [f"# HELP {name} {doc} (last {WINDOW})", f"# TYPE {name} summary"]
    for key, values in sorted(series.items()):
        ordered = sorted(values)
        for q in (0.5, 0.95):
            value = ordered[min(len(ordered) - 1, int(q * len(ordered)))]
            lines.append(f"{name}{_labels(((label, key), ('quantile', str(q))))} {value:.6f}")
        lines.append(f"{name}_count{_labels(((label, key),))} {len(ordered)}")


_MIXED = (  # mixed-adapter batches (--mixed-batches), per base model: (metric, help, ModelHost attribute)
    ("tinkerplug_mixed_batches_total", "Training batches that ran several keys' requests at once", "mixed_runs"),
    ("tinkerplug_mixed_requests_total", "Training requests that ran in a mixed-adapter batch", "mixed_requests"),
    ("tinkerplug_mixed_sample_batches_total", "Sampling batches that held several adapters", "mixed_samples"),
    ("tinkerplug_side_by_side_batches_total", "Batches that started while another key's batch ran (--compute-threads)",
     "worker.side_by_side"),
    ("tinkerplug_sampler_slot_loads_total", "Sampler snapshots copied into a sampler slot to sample from", "slot_loads"),
    ("tinkerplug_worker_busy_seconds_total", "Seconds the model's compute threads spent running requests, summed",
     "worker.busy_seconds"),
)


def _gauges(lines: list[str], state: Any) -> None:
    queued = state.futures.queued()
    sessions = Counter(s.owner for s in list(state.sessions.values()))
    models = Counter(m.owner for m in list(state.models.values()))
    for name, doc, values in (("tinkerplug_queue_depth", "Requests submitted and not yet done, per key", queued),
                              ("tinkerplug_sessions", "Open sessions, per key", sessions),
                              ("tinkerplug_models", "Training models, per key", models)):
        lines += [f"# HELP {name} {doc}", f"# TYPE {name} gauge"]
        lines += [f"{name}{_labels((('key', k),))} {n}" for k, n in sorted(values.items())]
    lines += ["# HELP tinkerplug_adapters_resident LoRA adapters in memory, per base model", "# TYPE tinkerplug_adapters_resident gauge"]
    for host in state.service.hosts():
        count = len(host.peft.peft_config) if host.peft is not None else 0
        lines.append(f"tinkerplug_adapters_resident{_labels((('base_model', host.source.name),))} {count}")
    for name, doc, attribute in _MIXED:
        lines += [f"# HELP {name} {doc}", f"# TYPE {name} counter"]
        for host in state.service.hosts():
            value = operator.attrgetter(attribute)(host)
            lines.append(f"{name}{_labels((('base_model', host.source.name),))} {value:g}")
    lines += ["# HELP tinkerplug_draining 1 while the server shuts down", "# TYPE tinkerplug_draining gauge",
              f"tinkerplug_draining {int(state.draining)}"]
