"""Start-up time of the light commands: ``tinkerplug --help``, ``tinkerplug plugins`` and
``tinkerplug hooks`` against a bare ``python -c pass``.

Every command imports every plugin module (entry points load at start-up), so one plugin with
a module-level ``import torch`` costs every command ~3 s. The variants run interleaved, round
after round, and the script prints medians, the load average, and the slowest imports of
``tinkerplug plugins`` (``python -X importtime``).

    python benchmarks/startup.py [--rounds 9] [--target 0.5]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

HEAVY = ("torch", "transformers", "tinker", "tinker_cookbook", "peft", "inspect_ai")


def tinkerplug_command() -> list[str]:
    """The installed console script, as users run it; else the module."""
    script = Path(sys.executable).with_name("tinkerplug")
    if script.is_file():
        return [str(script)]
    found = shutil.which("tinkerplug")
    return [found] if found else [sys.executable, "-m", "tinkerplug.cli"]


def timed(argv: list[str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of one run. CPU time (user + sys of the child) barely moves
    with the machine's load, so it says what an idle machine's wall time would be."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    result = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    elapsed = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{result.stderr}")
    return elapsed, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def slowest_imports(argv: list[str], top: int) -> list[tuple[float, str]]:
    """Top-level imports by cumulative time (``-X importtime`` lines with one level of indent)."""
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "tinkerplug.cli", *argv],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    rows, loaded = [], set()
    for line in result.stderr.splitlines():
        if not line.startswith("import time:") or "cumulative" in line:
            continue
        _, cumulative, name = line.split("|")
        loaded.add(name.strip())
        if not name.startswith("  "):  # one space of indent: imported at top level, not by another import
            rows.append((int(cumulative) / 1e6, name.strip()))
    heavy = [m for m in HEAVY if m in loaded]
    if heavy:
        print(f"WARNING: `tinkerplug {' '.join(argv)}` imports {', '.join(heavy)}")
    return sorted(rows, reverse=True)[:top]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--target", type=float, default=0.5, help="seconds")
    args = parser.parse_args()

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tinkerplug = tinkerplug_command()
    variants = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "tinkerplug --help": [*tinkerplug, "--help"],
        "tinkerplug plugins": [*tinkerplug, "plugins"],
        "tinkerplug hooks": [*tinkerplug, "hooks"],
    }
    for argv in variants.values():  # warm the page cache and .pyc files
        timed(argv)
    wall: dict[str, list[float]] = {name: [] for name in variants}
    cpu: dict[str, list[float]] = {name: [] for name in variants}
    for _ in range(args.rounds):
        for name, argv in variants.items():
            seconds, cpu_seconds = timed(argv)
            wall[name].append(seconds)
            cpu[name].append(cpu_seconds)

    load = os.getloadavg()
    print(f"{os.cpu_count()} CPUs, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, "
          f"python {sys.version.split()[0]}, {args.rounds} interleaved rounds (medians)")
    base_wall, base_cpu = statistics.median(wall["python -c pass"]), statistics.median(cpu["python -c pass"])
    print(f"{'command':<22} {'wall s':>7} {'- python':>9} {'cpu s':>7} {'- python':>9}")
    # On a machine busier than its cores, wall time measures the queue; CPU time is then the
    # better estimate of an idle machine's wall time, and the verdict uses it.
    loaded = load[0] > (os.cpu_count() or 1)
    failed = []
    for name in variants:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        print(f"{name:<22} {w:>7.3f} {w - base_wall:>+9.3f} {c:>7.3f} {c - base_cpu:>+9.3f}")
        if name.startswith("tinkerplug") and (c if loaded else w) > args.target:
            failed.append(name)
    if loaded:
        print(f"(load {load[0]:.1f} > {os.cpu_count()} CPUs: judged on CPU time; rerun on a quiet machine for wall time)")
    print("\nslowest top-level imports of `tinkerplug plugins` (cumulative s, one run):")
    for seconds, name in slowest_imports(["plugins"], top=8):
        print(f"  {seconds:6.3f}  {name}")
    if failed:
        print(f"\nover the {args.target} s target: {', '.join(failed)}")
        sys.exit(1)
    print(f"\nall under the {args.target} s target")


if __name__ == "__main__":
    main()
