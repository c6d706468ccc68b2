"""Does ``stable_reinforce`` learn the word-reversal task as ``importance_sampling`` does?

Runs ``tests/peer_drivers/rl_loop_061_calls.py`` (the Tinker calls of cookbook 0.6.1's
``rl_loop``: sampling with ``record_stability_info=True``, provenance spans) under
``tinkerplug local`` for each loss, and an lr-0 run as the baseline (the untrained policy's
reward on the same prompts and seeds). Printed: mean reward in the first and last ``window``
steps, and the gain over the lr-0 run in the last window, per seed, then the mean over seeds.

With ``--stale N`` the sampler is refreshed every N steps only: the later steps of each block
train on an older policy's samples (off-policy), where the two losses differ.

    python benchmarks/stable_reinforce.py [--steps 60] [--window 30] [--seeds 0 1] [--learning-rate 1e-3] [--stale 1]
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
from pathlib import Path

from common import machine_line, offline_env

DRIVER = Path(__file__).parents[1] / "tests" / "peer_drivers" / "rl_loop_061_calls.py"


def rewards(loss: str, lr: float, seed: int, args: argparse.Namespace, workdir: Path) -> list[float]:
    command = [sys.executable, "-m", "tinkerplug.cli", "local", "--checkpoint-dir", str(workdir / f"{loss}-{lr}-{seed}"), "--",
               sys.executable, str(DRIVER), "--loss", loss, "--learning-rate", str(lr), "--seed", str(seed),
               "--steps", str(args.steps), "--batch", str(args.batch), "--group", str(args.group), "--stale", str(args.stale)]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(done.stderr[-3000:])
    return [float(line.split()[-1]) for line in done.stdout.splitlines() if line.startswith("step ")]


def mean(values: list[float]) -> float:
    return sum(values) / len(values)


def main() -> None:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--window", type=int, default=30)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--stale", type=int, default=1, help="a new sampler every STALE steps (off-policy when > 1)")
    args = parser.parse_args()
    offline_env()
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; {machine_line()}")
    print(f"tiny-chat, LoRA r8, {args.steps} steps x {args.batch} prompts x {args.group} samples, lr {args.learning_rate}, "
          f"a new sampler every {args.stale} step(s)")
    print("| loss | seed | reward, first window | reward, last window | gain over lr 0, last window |")
    print("| --- | --- | --- | --- | --- |")
    gains: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            base = rewards("importance_sampling", 0.0, seed, args, Path(tmp))[-args.window:]
            for loss in ("stable_reinforce", "importance_sampling"):
                run = rewards(loss, args.learning_rate, seed, args, Path(tmp))
                gain = mean(run[-args.window:]) - mean(base)
                gains.setdefault(loss, []).append(gain)
                print(f"| {loss} | {seed} | {mean(run[:args.window]):.3f} | {mean(run[-args.window:]):.3f} | {gain:+.3f} |", flush=True)
    for loss, values in gains.items():
        print(f"{loss}: mean gain over lr 0 in the last {args.window} steps {mean(values):+.3f} ({len(values)} seeds)")
    print(f"after: {machine_line()}")


if __name__ == "__main__":
    main()
