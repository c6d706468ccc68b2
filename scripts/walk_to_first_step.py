"""How far a run wanders through the core before its first step (issue 19).

Runs one real step of a tiny run (tiny-chat, local backend, tests/data/fast_train.jsonl) with a
profiler on the main thread, from ``tinkerplug.training.train`` until the first training step
is submitted, and counts three walks a reader could take through the core (``tinkerplug`` and
``tinkerplug.*``, not the plugins). Each core function is met once, at its first call; a *stop*
is a run of consecutive functions of one module; a *return* is a stop in a module already left.

- **every function**: every core function a profiler sees (the first measure, kept as it was).
- **code a reader reads**: the same without code that is not read on its own: dataclass-generated
  ``__init__``\\s, and comprehensions and lambdas, which are read with the function around them.
- **following config**: only the functions that get the run's ``RunConfig`` (as an argument,
  as its ``data`` table, or on an object's ``.config``): the walk issue 19 counted.

It prints the core modules touched before the first step, the stops and returns of each walk,
and the jumps from one core module into another.

    python scripts/walk_to_first_step.py [--list]
    WALK_DISABLE=jsonl,sft python scripts/walk_to_first_step.py   # with -p no:jsonl -p no:sft
    WALK_ROOT=/path/to/checkout python scripts/walk_to_first_step.py   # an older checkout's code
"""

from __future__ import annotations

import asyncio
import datetime
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
GENERATED = ("<listcomp>", "<genexpr>", "<dictcomp>", "<setcomp>", "<lambda>", "__create_fn__")


def is_core(module: str) -> bool:
    return module == "tinkerplug" or module.startswith("tinkerplug.")


class Walk:
    """The core functions one walk meets, grouped into stops (consecutive ones of one module)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.stops: list[str] = []
        self.functions: list[str] = []
        self.jumps: list[str] = []  # calls from one core module into another (first call of each callee)
        self.called_by: dict[str, set[str]] = {}  # core module -> the core modules it calls into

    def meet(self, module: str, caller: str, function: str) -> None:
        self.functions.append(f"{module.removeprefix('tinkerplug.')}.{function}")
        if not self.stops or self.stops[-1] != module:
            self.stops.append(module)
        if caller != module and is_core(caller):
            self.jumps.append(module)
            self.called_by.setdefault(caller, set()).add(module)

    def report(self) -> str:
        return (f"{self.name}: {len(self.stops)} stops in {len(set(self.stops))} modules, "
                f"{returns(self.stops)} returns to a module already left; "
                f"jumps between core modules {len(self.jumps)}, {returns(self.jumps)} into a module entered before")


class Profiler:
    """Feeds the three walks from ``sys.setprofile`` until the first step is submitted."""

    def __init__(self, config: object) -> None:
        self.config = config
        self.walks = {name: Walk(name) for name in ("every function", "code a reader reads", "following config")}
        self.read: set[object] = set()
        self.done = False

    def profile(self, frame, event, arg):  # noqa: ANN001 - sys.setprofile's signature
        if event != "call" or self.done:
            return
        module = frame.f_globals.get("__name__", "")
        code = frame.f_code
        if code.co_name == "submit" and module.startswith("tinkerplug.steps"):
            self.done = True  # the first step: stop counting
            return
        if not is_core(module) or code in self.read:
            return
        self.read.add(code)
        caller = frame.f_back.f_globals.get("__name__", "") if frame.f_back is not None else ""
        self.walks["every function"].meet(module, caller, code.co_qualname)
        if any(g in code.co_qualname for g in GENERATED):
            return
        self.walks["code a reader reads"].meet(module, caller, code.co_qualname)
        if self.gets_config(frame):
            self.walks["following config"].meet(module, caller, code.co_qualname)

    def gets_config(self, frame) -> bool:  # noqa: ANN001 - a frame
        code = frame.f_code
        names = code.co_varnames[: code.co_argcount + code.co_kwonlyargcount]
        config, data = self.config, getattr(self.config, "data", None)
        values = [frame.f_locals.get(name) for name in names]
        return any(v is config or v is data or getattr(v, "config", None) is config for v in values)


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
    if os.environ.get("WALK_ROOT"):  # measure another checkout's code (its own venv installs it)
        sys.path[:0] = [str(Path(os.environ["WALK_ROOT"]) / d) for d in ("core", "plugins")]
    from tinkerplug.cli import load_run_config
    from tinkerplug.training import train

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.toml"
        path.write_text(config_text(Path(tmp) / "run"))
        options = tuple(f"no:{name}" for name in os.environ.get("WALK_DISABLE", "").split(",") if name)
        config, plugins = load_run_config(str(path), ("terminal.quiet=true",), options)
        profiler = Profiler(config)
        sys.setprofile(profiler.profile)
        try:
            asyncio.run(train(config, plugins))
        finally:
            sys.setprofile(None)
    import tinkerplug

    every = profiler.walks["every function"]
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, load {os.getloadavg()[0]:.1f}, "
          f"code in {Path(tinkerplug.__file__).parents[1]}")
    print(f"core modules touched before the first step: {len(set(every.stops))}")
    for walk in profiler.walks.values():
        print(walk.report())
    direct = sorted(m.removeprefix("tinkerplug.") for m in every.called_by.get("tinkerplug.training", ()))
    print(f"core modules training.py calls into itself: {len(direct)} ({', '.join(direct)})")
    if "--list" in sys.argv:
        for walk in profiler.walks.values():
            print(f"\n{walk.name}:\n  " + " -> ".join(m.removeprefix("tinkerplug.") for m in walk.stops))
        print("\nfollowing config, by function:\n  " + "\n  ".join(profiler.walks["following config"].functions))


if __name__ == "__main__":
    main()
