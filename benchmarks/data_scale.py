"""Time to the first step and peak RSS of ``tinkerplug run`` as the data grows: 4 k, 100 k and
1 M short chat examples (the quickstart's subtraction data, ``examples/quickstart/make_data.py``),
each with a cold render cache (first run) and a warm one (the same run again).

Each run is its own process (``tinkerplug run`` on tiny-chat, batch 8, a few steps, no evals),
started under a small wrapper that reports the peak RSS of that process alone
(``getrusage(RUSAGE_CHILDREN)``); the time to the first step is from the launch until step 0's
row is in ``metrics.jsonl`` (so it includes the interpreter start, the imports, the model load
and step 0 itself). Sizes and cache states are interleaved, round after round; medians are
printed with the load average and the targets beside them (at 1 M examples: the first step
within 10 s, peak RSS within +300 MB of the 4 k run).

    python benchmarks/data_scale.py [--sizes 4000,100000,1000000] [--rounds 2] [--work DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line, median, offline_env  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
FIRST_STEP_TARGET_S = 10.0
RSS_TARGET_MB = 300.0

# Runs the command given and prints the child's peak RSS (KB on Linux) as JSON on stderr's
# last line: the wrapper's own memory is not counted, only the process it waited for.
WRAPPER = (
    "import json, resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[2:], stdout=subprocess.DEVNULL, stderr=open(sys.argv[1], 'w')).returncode\n"
    "usage = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "print(json.dumps({'rc': code, 'maxrss_kb': usage.ru_maxrss, 'cpu_s': usage.ru_utime + usage.ru_stime}), file=sys.stderr)\n"
)


def make_data(work: Path, size: int) -> Path:
    path = work / f"n{size}_train.jsonl"
    if not path.is_file():
        subprocess.run(
            [sys.executable, str(ROOT / "examples/quickstart/make_data.py"), "--task", "subtract", "--n-train", str(size),
             "--n-heldout", "10", "--out-dir", str(work), "--prefix", f"n{size}_"],
            check=True, stdout=subprocess.DEVNULL,
        )
    return path


def write_config(directory: Path, data: Path, steps: int) -> Path:
    config = directory / "config.toml"
    config.write_text(
        'base_model = "tiny-chat"\nlearning_rate = 1e-3\nbatch_size = 8\n'
        f"num_steps = {steps}\nmax_length = 64\neval_every = 0\nsave_every = 0\nseed = 0\n"
        f"run_dir = {json.dumps(str(directory / 'run'))}\n[data]\ntrain = {json.dumps(str(data))}\n"
    )
    return config


def one_run(work: Path, data: Path, cache: Path, steps: int, label: str) -> dict[str, float]:
    """Launch one ``tinkerplug run``: seconds to step 0's metrics row, peak RSS (MB), CPU
    seconds of the whole run (which move little with the machine's load), wall seconds."""
    directory = Path(tempfile.mkdtemp(prefix=f"{label}-", dir=work))
    config = write_config(directory, data, steps)
    metrics = directory / "run" / "metrics.jsonl"
    log = directory / "stderr.txt"
    env = {**os.environ, "TINKERPLUG_CACHE_DIR": str(cache)}
    argv = [sys.executable, "-c", WRAPPER, str(log), sys.executable, "-m", "tinkerplug.cli", "run", str(config)]
    started = time.perf_counter()
    process = subprocess.Popen(argv, cwd=directory, stderr=subprocess.PIPE, text=True, env=env)
    first = None
    while process.poll() is None:
        if first is None and metrics.is_file() and metrics.stat().st_size:
            first = time.perf_counter() - started
        time.sleep(0.02)
    total = time.perf_counter() - started
    report = json.loads(process.stderr.read().strip().splitlines()[-1])
    if report["rc"] != 0:
        raise SystemExit(f"{label} failed:\n{log.read_text()}")
    if first is None:  # finished between two polls
        first = total
    shutil.rmtree(directory, ignore_errors=True)
    return {"first_step_s": first, "peak_rss_mb": report["maxrss_kb"] / 1024, "cpu_s": report["cpu_s"], "total_s": total}


def data_path_times(data: Path) -> tuple[float, float]:
    """In a fresh process: seconds to open the file as records (the byte scan + fingerprint),
    and to get step 0's record numbers (the epoch's shuffle): the start-up work that grows
    with the data, measured apart from the imports and the model load."""
    code = (
        "import sys, time; from pathlib import Path\n"
        "from tinkerplug_data.jsonl import JsonlRecords; from tinkerplug.batches import BatchPlan\n"
        "t = time.perf_counter(); records = JsonlRecords(Path(sys.argv[1])); opened = time.perf_counter() - t\n"
        "t = time.perf_counter(); BatchPlan(len(records), 8, 0).indices(0); print(opened, time.perf_counter() - t)"
    )
    out = subprocess.run([sys.executable, "-c", code, str(data)], capture_output=True, text=True, check=True).stdout
    opened, planned = out.split()
    return float(opened), float(planned)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="4000,100000,1000000")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "tinkerplug-data-scale")
    args = parser.parse_args()
    offline_env()
    sizes = [int(s) for s in args.sizes.split(",")]
    args.work.mkdir(parents=True, exist_ok=True)
    files = {size: make_data(args.work, size) for size in sizes}
    results: dict[tuple[int, str], list[dict[str, float]]] = {}
    for round_ in range(args.rounds):
        for size in sizes:
            cache = args.work / f"cache-{size}-{round_}"
            shutil.rmtree(cache, ignore_errors=True)
            for state in ("cold", "warm"):  # warm: the same run again, on the cache the first left
                result = one_run(args.work, files[size], cache, args.steps, f"{size}-{state}")
                results.setdefault((size, state), []).append(result)
                print(f"round {round_ + 1} {size:>8} {state}: {result}", flush=True)
            shutil.rmtree(cache, ignore_errors=True)
    opened = {size: data_path_times(files[size]) for size in sizes}
    report(sizes, files, results, opened, args.rounds)


def report(sizes: list[int], files: dict[int, Path], results: dict, opened: dict[int, tuple[float, float]], rounds: int) -> None:
    def med(size: int, state: str, key: str) -> float:
        return median([r[key] for r in results[(size, state)]])

    base = min(sizes)
    print(f"\n{machine_line()}")
    print(f"medians of {rounds} rounds; tiny-chat, batch 8; first step = launch to step 0's metrics row\n")
    print("| examples | file MB | index + hash s | step 0's shuffle s | first step s (cold / warm) | vs 4 k s (cold / warm) "
          "| run CPU s (cold / warm) | peak RSS MB (cold / warm) | vs 4 k MB (cold / warm) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for size in sizes:
        mb = files[size].stat().st_size / 2**20
        pair = lambda key, fmt, minus=False: " / ".join(  # noqa: E731
            format(med(size, s, key) - (med(base, s, key) if minus else 0), fmt) for s in ("cold", "warm")
        )
        print(
            f"| {size:,} | {mb:.0f} | {opened[size][0]:.2f} | {opened[size][1]:.2f} | {pair('first_step_s', '.1f')} | {pair('first_step_s', '+.1f', True)} "
            f"| {pair('cpu_s', '.1f')} | {pair('peak_rss_mb', '.0f')} | {pair('peak_rss_mb', '+.0f', True)} |"
        )
    top = max(sizes)
    first = max(med(top, s, "first_step_s") for s in ("cold", "warm"))
    delta = max(med(top, s, "first_step_s") - med(base, s, "first_step_s") for s in ("cold", "warm"))
    extra = max(med(top, s, "peak_rss_mb") - med(base, s, "peak_rss_mb") for s in ("cold", "warm"))
    print(f"\ntarget at {top:,} examples: first step within {FIRST_STEP_TARGET_S:.0f} s: {first:.1f} s "
          f"({'met' if first <= FIRST_STEP_TARGET_S else 'NOT met'}; {delta:+.1f} s over the {base:,} run, "
          "the part that grows with the data)")
    print(f"target at {top:,} examples: peak RSS within +{RSS_TARGET_MB:.0f} MB of the {base:,} run: {extra:+.0f} MB "
          f"({'met' if extra <= RSS_TARGET_MB else 'NOT met'})")


if __name__ == "__main__":
    main()
