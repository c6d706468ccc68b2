"""The post-training tutorial's tables (RL, DPO, distillation), from the runs' ``metrics.jsonl``:
the numbers in ``docs/tutorial/post-training.md`` come from here, never from a hand edit.

    python scripts/post_training.py --run runs/post-training   # quickstart (to step 1000, a
        # checkpoint every 250), then the rl, dpo and distill examples from it; records date,
        # load and machine in each run dir, and prints the tables
    python scripts/post_training.py runs/post-training          # print the tables of those runs
    python scripts/post_training.py runs/post-training --record  # keep the tables' inputs in
        # examples/{rl,dpo,distill}/recorded
    python scripts/post_training.py --update-docs                # rewrite the docs from the record

``tests/test_objectives.py`` checks that the docs' tables are what this script prints for the
recorded metrics.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quickstart_table import machine_info  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "tutorial" / "post-training.md"
WINDOW = 25  # a training metric at an eval step: the mean over the steps before it
EXAMPLES = ("rl", "dpo", "distill")
ROWS = {  # per example: (label, metric, windowed)
    "rl": [("held-out exact match", "eval/heldout/exact_match", False), ("reward (mean, sampled at T=1)", "rl/reward", True),
           ("groups with zero reward variance", "rl/zero_variance_groups", True), ("completion tokens", "rl/completion_tokens", True)],
    "dpo": [("held-out exact match", "eval/heldout/exact_match", False), ("preference accuracy", "dpo/accuracy", True),
            ("reward margin", "dpo/margin", True), ("chosen logprob", "dpo/chosen_logprob", True),
            ("rejected logprob", "dpo/rejected_logprob", True)],
    "distill": [("held-out exact match", "eval/heldout/exact_match", False), ("teacher KL (nats/token)", "distill/teacher_kl", True)],
}


def read_metrics(run_dir: Path) -> list[dict]:
    path = run_dir / "metrics.jsonl"
    if not path.is_file():
        sys.exit(f"error: {path} not found\n  hint: run `python scripts/post_training.py --run {run_dir.parent}` first")
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def windowed(rows: list[dict], key: str, step: int) -> float | None:
    """Mean of ``key`` over the WINDOW steps before ``step`` (the first ones at step 0)."""
    values = {r["step"]: r[key] for r in rows if key in r and "train/loss" in r}
    window = range(0, WINDOW) if step == 0 else range(step - WINDOW, step)
    got = [values[s] for s in window if s in values]
    return sum(got) / len(got) if got else None


def _fmt(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def table(name: str, rows: list[dict]) -> str:
    evals = {r["step"]: r for r in rows if "eval/heldout/exact_match" in r}
    steps = sorted(evals)
    elapsed = {r["step"]: r["time/elapsed_s"] for r in rows if "time/elapsed_s" in r}
    lines = ["| | " + " | ".join(f"step {s}" for s in steps) + " |", "| --- |" + " --- |" * len(steps)]
    for label, key, window in ROWS[name]:
        cells = [windowed(rows, key, s) if window else evals[s].get(key) for s in steps]
        lines.append(f"| {label} | " + " | ".join(_fmt(c) for c in cells) + " |")
    lines.append("| minutes since start | " + " | ".join(f"{elapsed.get(s - 1, 0.0) / 60:.1f}" for s in steps) + " |")
    return "\n".join(lines)


def machine_line(machine: dict | None) -> str:
    if not machine:
        return "Machine and load not recorded."
    before = ", ".join(f"{x:.1f}" for x in machine["load_before"])
    after = ", ".join(f"{x:.1f}" for x in machine.get("load_after", []))
    return (
        f"Run {machine['date']} on {machine['cpus']} CPU cores (torch {machine['torch']}, {machine['threads']} threads), "
        f"load average {before} (1, 5, 15 min) at the start and {after} at the end (a shared machine: other jobs ran "
        f"beside it); wall time {machine.get('wall_s', 0) / 60:.1f} min including start-up and evals."
    )


def render(name: str, run_dir: Path) -> str:
    meta = run_dir / "machine.json"
    machine = json.loads(meta.read_text()) if meta.is_file() else None
    return table(name, read_metrics(run_dir)) + "\n\n" + machine_line(machine) + "\n"


def run_example(name: str, root: Path, extra: list[str]) -> None:
    machine, started = machine_info(), time.time()
    config = ROOT / "examples" / ("quickstart" if name == "quickstart" else name) / "config.toml"
    command = [sys.executable, "-m", "tinkerplug.cli", "run", str(config), "-q", "--set", f"run_dir={root / name}", *extra]
    subprocess.run(command, check=True, cwd=ROOT)
    machine["load_after"], machine["wall_s"] = list(__import__("os").getloadavg()), time.time() - started
    (root / name / "machine.json").write_text(json.dumps(machine, indent=1) + "\n")


def run_all(root: Path) -> None:
    quickstart = root / "quickstart"
    if not (quickstart / "checkpoints.jsonl").is_file():
        run_example("quickstart", root, ["--set", "save_every=250", "-p", "no:inspect"])
    subprocess.run([sys.executable, str(ROOT / "examples" / "dpo" / "make_data.py")], check=True)
    run_example("rl", root, ["--set", f"init_from={quickstart}:250"])
    run_example("dpo", root, ["--set", f"init_from={quickstart}:250"])
    run_example("distill", root, ["--set", f"distill.teacher={quickstart}"])


def record(root: Path) -> None:
    keep = ("step", "train/loss", "time/elapsed_s")
    for name in EXAMPLES:
        out = ROOT / "examples" / name / "recorded"
        out.mkdir(parents=True, exist_ok=True)
        metrics = [k for _, k, _ in ROWS[name]]
        rows = [{k: v for k, v in r.items() if k in keep or k in metrics} for r in read_metrics(root / name)]
        (out / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        (out / "machine.json").write_text((root / name / "machine.json").read_text())


def docs_block(name: str) -> tuple[str, str]:
    return f"<!-- {name}-table: python scripts/post_training.py --update-docs -->", f"<!-- /{name}-table -->"


def update_docs() -> None:
    text = DOC.read_text(encoding="utf-8")
    for name in EXAMPLES:
        begin, end = docs_block(name)
        head, rest = text.split(begin, 1)
        _, tail = rest.split(end, 1)
        text = head + begin + "\n" + render(name, ROOT / "examples" / name / "recorded") + end + tail
    DOC.write_text(text, encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("root", nargs="?", type=Path, help="the dir holding quickstart/, rl/, dpo/, distill/ runs")
    parser.add_argument("--run", action="store_true", help="run the examples into ROOT first")
    parser.add_argument("--record", action="store_true", help="keep the tables' inputs in examples/*/recorded")
    parser.add_argument("--update-docs", action="store_true")
    args = parser.parse_args()
    if args.update_docs:
        update_docs()
        return
    if args.root is None:
        parser.error("give ROOT (or --update-docs)")
    root = args.root.resolve()
    if args.run:
        run_all(root)
    for name in EXAMPLES:
        print(f"## {name}\n\n{render(name, root / name)}")
    if args.record:
        record(root)


if __name__ == "__main__":
    main()
