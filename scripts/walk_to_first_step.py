"""How far a run wanders through the core before its first step (issue 19).

Runs one real step of a tiny run (tiny-chat, local backend, tests/data/fast_train.jsonl) with a
profiler on the main thread, from ``tinkerplug.training.train`` until the first training step
is submitted, and prints: the core modules touched, the stops (each core function counted at its
first call, as a reader meets it; consecutive functions of one module are one stop) and the
returns (stops in a module already left once); and the jumps: calls from one core module into
another (each callee at its first call), and how many land in a module entered before.

    python scripts/walk_to_first_step.py [--list]
    WALK_DISABLE=jsonl,sft python scripts/walk_to_first_step.py   # with -p no:jsonl -p no:sft
"""

from __future__ import annotations

import asyncio
import datetime
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


class Walk:
    """Core modules (``tinkerplug`` and ``tinkerplug.*``, not the plugins) in call order."""

    def __init__(self) -> None:
        self.stops: list[str] = []
        self.jumps: list[str] = []  # calls from one core module into another (first call of each callee)
        self.called_by: dict[str, set[str]] = {}  # core module -> the core modules it calls into
        self.read: set[object] = set()  # functions already met: a reader reads each one once
        self.done = False

    def profile(self, frame, event, arg):  # noqa: ANN001 - sys.setprofile's signature
        if event != "call" or self.done:
            return
        module = frame.f_globals.get("__name__", "")
        if frame.f_code.co_name == "submit" and module.startswith("tinkerplug.steps"):
            self.done = True  # the first step: stop counting
            return
        if not (module == "tinkerplug" or module.startswith("tinkerplug.")) or frame.f_code in self.read:
            return
        self.read.add(frame.f_code)
        if not self.stops or self.stops[-1] != module:
            self.stops.append(module)
        caller = frame.f_back.f_globals.get("__name__", "") if frame.f_back is not None else ""
        if caller != module and (caller == "tinkerplug" or caller.startswith("tinkerplug.")):
            self.jumps.append(module)
            self.called_by.setdefault(caller, set()).add(module)


def returns(modules: list[str]) -> int:
    """How many entries of ``modules`` name a module that came earlier."""
    return sum(module in modules[:i] for i, module in enumerate(modules))


def config_text(run_dir: Path) -> str:
    data = ROOT / "tests" / "data"
    return (
        f'base_model = "tiny-chat"\nbatch_size = 8\nnum_steps = 1\nmax_length = 64\n'
        f'run_dir = "{run_dir}"\n[data]\ntrain = "{data / "fast_train.jsonl"}"\nheldout = "{data / "fast_heldout.jsonl"}"\n'
        "[heldout]\nlimit = 2\nmax_tokens = 4\n"
    )


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TINKERPLUG_CACHE_DIR", tempfile.mkdtemp(prefix="walk-cache-"))
    from tinkerplug.cli import load_run_config
    from tinkerplug.training import train

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.toml"
        path.write_text(config_text(Path(tmp) / "run"))
        options = tuple(f"no:{name}" for name in os.environ.get("WALK_DISABLE", "").split(",") if name)
        config, plugins = load_run_config(str(path), ("terminal.quiet=true",), options)
        walk = Walk()
        sys.setprofile(walk.profile)
        try:
            asyncio.run(train(config, plugins))
        finally:
            sys.setprofile(None)
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, load {os.getloadavg()[0]:.1f}")
    print(f"core modules touched before the first step: {len(set(walk.stops))}")
    print(f"stops: {len(walk.stops)}, returns to a module already left: {returns(walk.stops)}")
    print(f"jumps from one core module into another: {len(walk.jumps)}, into a module entered before: {returns(walk.jumps)}")
    direct = sorted(m.removeprefix("tinkerplug.") for m in walk.called_by.get("tinkerplug.training", ()))
    print(f"core modules training.py calls into itself: {len(direct)} ({', '.join(direct)})")
    if "--list" in sys.argv:
        print(" -> ".join(m.removeprefix("tinkerplug.") for m in walk.stops))


if __name__ == "__main__":
    main()
