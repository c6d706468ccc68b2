"""Where a ``tinkerplug serve`` process spends its time under N SDK clients: runs
``serve_clients.py`` (mixed batches on) and, in the middle of its steady state, samples the
server with ``py-spy`` (a dev tool: ``pip install py-spy``), then prints each thread's share of
samples by what it was doing: the model's compute threads (merged training batches, optimizer
steps, sampling, sampler snapshots, ...) and the HTTP event loop. With ``--gil`` only the
thread holding the interpreter lock is sampled, so the shares say who holds it.

    python benchmarks/serve_profile.py [--clients 4] [--seconds 10] [--gil] [--serve-arg=...]
"""

from __future__ import annotations

import argparse
import collections
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine_line

HERE = Path(__file__).resolve().parent
RATE = 100  # samples a second
# (label, a frame that marks it), first match wins; the compute threads' jobs, then the event loop's work
KINDS = [
    ("sampler snapshot", "from_snapshot"), ("sampler slots", "ModelHost.bind"), ("sampling", "run_sample_batch"),
    ("optim_step", "_run_optim"), ("training batch", "run_jobs"), ("training, alone", "TrainingClient._job"),
    ("future table sweep", "FutureTable._sweep"), ("request decoding", "decode_"), ("routes", "Route.handle"),
    ("HTTP parsing", "H11Protocol"),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--seconds", type=int, default=10, help="sampled seconds")
    parser.add_argument("--gil", action="store_true", help="sample only the thread holding the interpreter lock")
    parser.add_argument("--serve-arg", action="append", default=[], help="passed to tinkerplug serve (repeatable)")
    args = parser.parse_args()
    print(f"# serve_profile: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {args.clients} clients, "
          f"{args.seconds} s sampled{', GIL holder only' if args.gil else ''}")
    print("# " + machine_line())
    bench = subprocess.Popen([sys.executable, str(HERE / "serve_clients.py"), "--clients", str(args.clients), "--mixed", "on",
                              "--seconds", str(args.seconds + 25), *(f"--serve-arg={a}" for a in args.serve_arg)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        samples = record(server_pid(bench), args)
    finally:
        bench.wait(600)
    report(samples)
    print("# " + machine_line())


def server_pid(bench: subprocess.Popen) -> int:
    """The ``tinkerplug serve`` child of the benchmark, once its clients are past warm-up."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        time.sleep(1)
        children = Path(f"/proc/{bench.pid}/task/{bench.pid}/children").read_text().split()
        for pid in children:
            if b"tinkerplug.cli\x00serve" in Path(f"/proc/{pid}/cmdline").read_bytes():
                time.sleep(15)  # model load, sessions and warm-up steps
                return int(pid)
    raise SystemExit("serve_clients.py started no server")


def record(pid: int, args: argparse.Namespace) -> list[tuple[str, list[str], int]]:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "raw.txt"
        command = ["py-spy", "record", "-p", str(pid), "-d", str(args.seconds), "-r", str(RATE), "--threads", "-f", "raw",
                   "-o", str(out), *(["--gil"] if args.gil else [])]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        rows = []
        for line in out.read_text().splitlines():
            stack, count = line.rsplit(" ", 1)
            frames = stack.split(";")
            rows.append((frames[0], frames[1:], int(count)))
        return rows


def report(samples: list[tuple[str, list[str], int]]) -> None:
    total = sum(count for _, _, count in samples)
    by_thread: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for thread, frames, count in samples:
        name = "event loop" if "MainThread" in thread else "compute" if "tinkerplug-local" in thread else "other"
        stack = ";".join(frames)
        kind = next((label for label, mark in KINDS if mark in stack), "other")
        by_thread[name][kind] += count
    print(f"samples: {total} ({total / RATE:.1f} thread-seconds)")
    for name, kinds in sorted(by_thread.items()):
        n = sum(kinds.values())
        print(f"{name}: {n / total:.0%} of samples")
        for kind, count in kinds.most_common():
            print(f"  {count / n:6.1%}  {kind}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
