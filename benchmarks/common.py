"""What every benchmark script shares: offline settings, the machine's load, medians.

Wall times on shared machines are noisy, so the scripts interleave the variants they compare,
report medians of several rounds and print the load average next to their numbers.
"""

from __future__ import annotations

import os
import statistics
import sys
from pathlib import Path


def offline_env() -> None:
    """Call before torch loads: no hub look-ups; OpenMP threads that sleep instead of spin
    (spinning threads are ~50x slower when cores are shared)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from tinkerplug.environ import quiet_openmp

    quiet_openmp(os.environ)


def machine_line() -> str:
    """CPU count, load average and torch threads, printed with every result."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    try:
        import torch

        threads = f", torch threads {torch.get_num_threads()}"
        device = ", cuda " + torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""
    except ImportError:  # pragma: no cover - torch is a dependency
        threads = device = ""
    return (
        f"machine: {os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
        f"{threads}{device}, python {sys.version.split()[0]}"
    )


def median(values: list[float]) -> float:
    return statistics.median(values)


def model_dir(name: str) -> str:
    """A shipped model's short name (``tiny-chat``) or a model directory, as an absolute path."""
    from tinkerplug.models import shipped_model_dir

    shipped = shipped_model_dir(name)
    if shipped is not None:
        return str(shipped.resolve())
    path = Path(name).expanduser()
    if not (path / "config.json").is_file():
        raise SystemExit(f"{name}: not a shipped model or a model directory (no config.json)")
    return str(path.resolve())


def peak_rss_gb() -> float:
    """This process's peak resident memory so far (each benchmark side runs in its own process)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6  # KB on Linux


def trl_step_clock() -> tuple[object, list[float], list[dict]]:
    """A ``transformers`` callback timing each optimizer step of a TRL trainer, with the lists
    it fills: the seconds of every step, and every dict the trainer logs."""
    import time

    from transformers import TrainerCallback

    times: list[float] = []
    logged: list[dict] = []
    started: list[float] = []

    class StepClock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            started.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - started[-1])

        def on_log(self, args, state, control, logs=None, **kw):
            if logs:
                logged.append(dict(logs))

    return StepClock(), times, logged
