"""The quickstart's results table, from a run's ``metrics.jsonl``: the numbers in
``docs/tutorial/quickstart.md`` come from here, never from a hand edit.

    python scripts/quickstart_table.py RUN_DIR            # print the table (and the machine line)
    python scripts/quickstart_table.py --run RUN_DIR      # run the quickstart into RUN_DIR first,
                                                          # recording date, load and machine
    python scripts/quickstart_table.py RUN_DIR --record examples/quickstart/recorded
                                                          # keep the table's inputs in the repo
    python scripts/quickstart_table.py --update-docs      # rewrite the docs' table from the record

``tests/test_docs.py`` checks that the docs' table is what this script prints for the recorded
metrics, and (slow) that a fresh run of the quickstart's first steps logs the recorded values.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "examples" / "quickstart" / "config.toml"
RECORDED = ROOT / "examples" / "quickstart" / "recorded"
DOC = ROOT / "docs" / "tutorial" / "quickstart.md"
BEGIN = "<!-- quickstart-table: python scripts/quickstart_table.py --update-docs -->"
END = "<!-- /quickstart-table -->"
TRAIN_WINDOW = 10  # train loss at an eval step: the mean over this many steps (one step is noisy)

ROWS = [  # label, metric
    ("held-out exact match (`heldout`)", "eval/heldout/exact_match"),
    ("held-out loss (`eval/nll/loss`)", "eval/nll/loss"),
    ("Inspect task exact match", "eval/subtraction/exact/mean"),
    ("Inspect task mean absolute error", "eval/subtraction/abs_error/mean"),
]


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        sys.exit(f"error: {path} not found\n  hint: pass the run_dir of a quickstart run (or --run RUN_DIR to make one)")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def _fmt(value: float | None) -> str:
    if value is None:
        return ""
    if value == 0 or abs(value) >= 1:
        return f"{value:.2f}"
    return f"{value:.2g}" if abs(value) < 0.1 else f"{value:.2f}"


def train_loss_at(rows: list[dict], step: int) -> float | None:
    """Mean train loss of the TRAIN_WINDOW steps before ``step`` (the first ones at step 0)."""
    losses = {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}
    window = range(0, TRAIN_WINDOW) if step == 0 else range(step - TRAIN_WINDOW, step)
    values = [losses[s] for s in window if s in losses]
    return sum(values) / len(values) if values else None


def table(rows: list[dict]) -> str:
    evals = {r["step"]: r for r in rows if "eval/heldout/exact_match" in r}
    steps = sorted(evals)
    lines = ["| | " + " | ".join(f"step {s}" for s in steps) + " |", "| --- |" + " --- |" * len(steps)]
    for label, key in ROWS:
        lines.append(f"| {label} | " + " | ".join(_fmt(evals[s].get(key)) for s in steps) + " |")
    label = f"train loss (mean NLL per answer token, {TRAIN_WINDOW} steps before)"
    lines.append(f"| {label} | " + " | ".join(_fmt(train_loss_at(rows, s)) for s in steps) + " |")
    return "\n".join(lines)


def machine_line(rows: list[dict], machine: dict | None) -> str:
    steps = max(r["step"] for r in rows)
    elapsed = max(r.get("time/elapsed_s", 0.0) for r in rows)
    timing = f"the {steps} steps took {elapsed:.1f} s, evals included" if elapsed else f"{steps} steps"
    if not machine:
        return f"Machine and load not recorded; {timing}."
    load = ", ".join(f"{x:.2f}" for x in machine["load_before"])
    return (
        f"Run {machine['date']} on {machine['cpus']} CPU cores ({machine['machine']}, torch {machine['torch']}, "
        f"{machine['threads']} threads), load average {load} (1, 5, 15 min) at the start; {timing}."
    )


def render(run_dir: Path) -> str:
    rows = read_metrics(run_dir)
    meta = run_dir / "machine.json"
    machine = json.loads(meta.read_text()) if meta.is_file() else None
    return table(rows) + "\n\n" + machine_line(rows, machine) + "\n"


def cpu_identity() -> str:
    """The CPU's model name and a hash of its feature flags: torch picks its kernels by them, so
    two machines agree to the last bit only when these do."""
    import hashlib

    info = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    model = info.get("model name") or platform.processor() or platform.machine()
    flags = " ".join(sorted(info.get("flags", "").split()))
    return f"{model} (flags {hashlib.sha256(flags.encode()).hexdigest()[:12]})"


def machine_info() -> dict:
    import torch

    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_before": list(os.getloadavg()),
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "cpu": cpu_identity(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
    }


def run_quickstart(run_dir: Path) -> None:
    machine = machine_info()
    command = [sys.executable, "-m", "tinkerplug.cli", "run", str(CONFIG), "-q", "--set", f"run_dir={run_dir}"]
    subprocess.run(command, check=True)
    machine["load_after"] = list(os.getloadavg())
    (run_dir / "machine.json").write_text(json.dumps(machine, indent=1) + "\n")


def record(run_dir: Path, out: Path) -> None:
    """Keep what the table and the prefix check read: step, lr, train loss and eval metrics."""
    keep = ("step", "lr", "train/loss", "time/elapsed_s")
    out.mkdir(parents=True, exist_ok=True)
    with (out / "metrics.jsonl").open("w", encoding="utf-8") as f:
        for row in read_metrics(run_dir):
            f.write(json.dumps({k: v for k, v in row.items() if k in keep or k.startswith("eval/")}) + "\n")
    meta = run_dir / "machine.json"
    if meta.is_file():
        (out / "machine.json").write_text(meta.read_text())


def docs_block() -> str:
    return f"{BEGIN}\n{render(RECORDED)}{END}"


def update_docs() -> None:
    text = DOC.read_text(encoding="utf-8")
    start, end = text.index(BEGIN), text.index(END) + len(END)
    DOC.write_text(text[:start] + docs_block() + text[end:], encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", nargs="?", type=Path)
    parser.add_argument("--run", action="store_true", help="run the quickstart into RUN_DIR first")
    parser.add_argument("--record", type=Path, metavar="DIR", help="copy the table's inputs to DIR")
    parser.add_argument("--update-docs", action="store_true", help="rewrite the table in the docs from the record")
    args = parser.parse_args()
    if args.update_docs:
        update_docs()
        print(f"updated {DOC.relative_to(ROOT)} from {RECORDED.relative_to(ROOT)}")
        return
    if args.run_dir is None:
        parser.error("RUN_DIR is required (or --update-docs)")
    if args.run:
        run_quickstart(args.run_dir.resolve())
    if args.record:
        record(args.run_dir, args.record)
    print(render(args.run_dir), end="")


if __name__ == "__main__":
    main()
