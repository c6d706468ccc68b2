"""GRPO through ``tinkerplug run`` (objective = "rl", local backend) against TRL's GRPOTrainer.

The same setup on both sides: the model, the prompts ("Reverse: WORD" chat turns, the words of
``examples/grpo``), ``--batch`` prompts x ``--group`` samples per step, at most ``--max-tokens``
sampled tokens at temperature 1, an exact-match reward, group-centred advantages (no std
scaling), no KL term, LoRA rank ``--rank`` / alpha 32 on attention + MLP, Adam at a constant LR.

- tinkerplug: a config file with ``objective = "rl"`` run by ``tinkerplug run`` in the child
  process (sampling, rewards, ``importance_sampling``, optim step, all as a user runs it);
  per-step wall time = the time between consecutive steps' lines appearing in the run's
  ``metrics.jsonl`` (a thread watches the file; the run's own ``time/step_s`` leaves out the
  sampling that the pipelined loop prepares ahead).
- trl: ``GRPOTrainer`` (``GRPOConfig`` defaults otherwise: transformers ``generate``, its
  ``dapo`` loss) with a peft ``LoraConfig``; per-step wall time from a callback.

Each side runs in its own process (peak RSS is that process's); sides alternate over
``--rounds``; the first (warm-up) and last step of each run are untimed. Tokens per step =
sampled tokens + tokens trained on (prompt + completion of every sample). ``--model real`` builds the random-init
real-vocabulary Qwen3 of ``real_scale.py`` (151,936 tokens, hidden 256, 4 layers); a random
model never stops early, so every completion there is ``--max-tokens`` long on both sides.

    python benchmarks/rl_vs_trl.py [--model tiny-chat|real|DIR] [--steps 6] [--rounds 2]

Needs ``pip install -e '.[bench]'`` for the TRL side. Target: tinkerplug >= 2x TRL's tokens/s
at no more peak memory.
"""

from __future__ import annotations

import argparse
import datetime
import json
import random
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import machine_line, median, model_dir, offline_env, peak_rss_gb, trl_step_clock

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ALPHA = 32
SEED = 0
SPEEDUP_TARGET = 2.0


def make_records(path: Path, n: int) -> None:
    """``n`` chat records: "Reverse: WORD" and the reversed word (examples/grpo's words)."""
    rng = random.Random(SEED)
    with path.open("w") as f:
        for _ in range(n):
            word = "".join(rng.choices(string.ascii_lowercase, k=rng.randint(4, 7)))
            messages = [{"role": "user", "content": f"Reverse: {word}"}, {"role": "assistant", "content": word[::-1]}]
            f.write(json.dumps({"messages": messages}) + "\n")


# -- the two sides (each in its own process) ------------------------------------------------


def run_tinkerplug(args: argparse.Namespace, records: Path, work: Path) -> dict:
    import shutil

    from tinkerplug import cli

    shutil.rmtree(work / "run", ignore_errors=True)  # the previous round's
    config = work / "config.toml"
    config.write_text("\n".join([
        f"base_model = {json.dumps(args.model_dir)}", 'objective = "rl"', f"lora_rank = {args.rank}",
        "train_unembed = false", f"learning_rate = {args.lr}", 'lr_schedule = "constant"',
        f"batch_size = {args.batch}", f"num_steps = {args.steps}", "max_length = 128", f"seed = {SEED}",
        f"run_dir = {json.dumps(str(work / 'run'))}", "eval_every = 0", "save_every = 0",
        "[rl]", f"group_size = {args.group}", f"max_tokens = {args.max_tokens}", "temperature = 1.0",
        'loss = "importance_sampling"', "[rl.rewards]", "exact_match = 1.0",
        "[data]", f"train = {json.dumps(str(records))}",
    ]) + "\n")
    seen = watch_steps(work / "run" / "metrics.jsonl")
    started = time.perf_counter()
    try:
        cli.main(["run", str(config), "--quiet"])
    except SystemExit as exc:
        if exc.code:
            raise
    finally:
        time.sleep(0.05)  # one more poll: the last step's line
        seen.append(None)  # stops the watcher
    metrics = [json.loads(line) for line in (work / "run" / "metrics.jsonl").read_text().splitlines()]
    arrived = [t for t in seen if t is not None]
    steps = [m for m in metrics if "time/step_s" in m][: len(arrived)]
    times = [b - a for a, b in zip([started] + arrived, arrived)]  # step 0 (from start-up): warm-up, not used
    sampled = [m["rl/completion_tokens"] * m["train/examples"] for m in steps]
    # input_tokens: prompt + completion minus the last token (the datum's shift): add it back.
    trained = [m["train/input_tokens"] + m["train/examples"] for m in steps]
    return dict(times=times, sampled=sampled, trained=trained,
                reward=[m["rl/reward"] for m in steps], peak_gb=peak_rss_gb())


def watch_steps(path: Path) -> list:
    """A thread that appends the wall time at which each training step's line first appears in
    ``path``; it stops when None is appended to the returned list."""
    import threading

    seen: list = []

    def poll() -> None:
        count = 0
        while not seen or seen[-1] is not None:
            try:
                lines = [json.loads(x) for x in path.read_text().splitlines()[count:] if x.endswith("}")]
            except (OSError, ValueError):
                lines = []
            now = time.perf_counter()
            for line in lines:
                count += 1
                if "time/step_s" in line:
                    seen.append(now)
            time.sleep(0.005)

    threading.Thread(target=poll, daemon=True).start()
    return seen


def run_trl(args: argparse.Namespace, records: Path, work: Path) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    rows = []
    for line in records.read_text().splitlines():
        user, reply = json.loads(line)["messages"]
        rows.append({"prompt": [user], "answer": reply["content"]})
    clock, times, logs = trl_step_clock()
    def exact_match(completions, answer, **kw):
        return [float(c[0]["content"].strip() == a) for c, a in zip(completions, answer)]

    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32)
    config = GRPOConfig(
        output_dir=str(work / "trl"), per_device_train_batch_size=args.batch * args.group, num_generations=args.group,
        max_completion_length=args.max_tokens, max_steps=args.steps, learning_rate=args.lr, lr_scheduler_type="constant",
        warmup_steps=0, weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.95, max_grad_norm=0.0, beta=0.0,
        scale_rewards="none", temperature=1.0, logging_steps=1, save_strategy="no", report_to=[], use_cpu=True,
        bf16=False, seed=SEED, shuffle_dataset=False, dataloader_num_workers=0, disable_tqdm=True,
    )
    peft = LoraConfig(r=args.rank, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=LORA_TARGETS)
    trainer = GRPOTrainer(model=model, reward_funcs=exact_match, args=config, train_dataset=Dataset.from_list(rows),
                          peft_config=peft, callbacks=[clock])
    trainer.train()
    logged = [r for r in logs if "num_tokens" in r]
    seen = [0.0] + [float(r["num_tokens"]) for r in logged]
    trained = [b - a for a, b in zip(seen, seen[1:])]  # prompt + completion tokens of each step
    sampled = [float(r["completions/mean_length"]) * args.batch * args.group for r in logged]
    return dict(times=times, sampled=sampled, trained=trained, reward=[float(r.get("reward", 0.0)) for r in logged],
                peak_gb=peak_rss_gb())


# -- the driver ----------------------------------------------------------------------------


def run_side(side: str, args: argparse.Namespace, model: str, records: Path, work: Path) -> dict | None:
    out = work / f"{side}.json"
    command = [sys.executable, __file__, "--child", side, "--model-dir", model, "--records", str(records), "--out", str(out)]
    command += ["--steps", str(args.steps), "--batch", str(args.batch), "--group", str(args.group)]
    command += ["--max-tokens", str(args.max_tokens), "--rank", str(args.rank), "--lr", str(args.lr)]
    proc = subprocess.run(command, cwd=work, capture_output=True, text=True)  # progress bars and summaries
    if proc.returncode != 0:
        print(f"{side}: failed (exit {proc.returncode})\n{proc.stderr[-3000:]}")
        return None
    result = json.loads(out.read_text())
    n = min(len(result["times"]), len(result["sampled"]), len(result["trained"]))
    # The first step is warm-up; the last is left out too: a run's last metrics lines are
    # written together at its end, so the time between them says nothing (both sides alike).
    timed = slice(1, n - 1)
    tokens = [s + t for s, t in zip(result["sampled"][timed], result["trained"][timed])]
    seconds = sum(result["times"][timed])
    return dict(
        tokens_per_s=sum(tokens) / seconds, sampled_per_s=sum(result["sampled"][timed]) / seconds,
        step_s=median(result["times"][timed]), tokens_per_step=median(tokens),
        sampled_per_step=median(result["sampled"][timed]), peak_gb=result["peak_gb"], reward=result["reward"],
    )


def report(runs: dict[str, list[dict]], args: argparse.Namespace) -> None:
    print(f"\n| side | tokens/s (sampled + trained) | sampled tokens/s | median step s | tokens per step | sampled per step | peak RSS GB |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    summary = {}
    for side, results in runs.items():
        summary[side] = {k: median([r[k] for r in results]) for k in results[0] if k != "reward"}
        r = summary[side]
        print(f"| {side} | {r['tokens_per_s']:.0f} | {r['sampled_per_s']:.0f} | {r['step_s']:.3f} | {r['tokens_per_step']:.0f} | "
              f"{r['sampled_per_step']:.0f} | {r['peak_gb']:.2f} |")
    print("(medians over rounds; per round: " + "; ".join(
        f"{side} " + ", ".join(f"{r['tokens_per_s']:.0f}" for r in results) for side, results in runs.items()) + " tokens/s)")
    if "tinkerplug" in summary and "trl" in summary:
        ours, theirs = summary["tinkerplug"], summary["trl"]
        speed, memory = ours["tokens_per_s"] / theirs["tokens_per_s"], ours["peak_gb"] / theirs["peak_gb"]
        rounds = [a["tokens_per_s"] / b["tokens_per_s"] for a, b in zip(runs["tinkerplug"], runs["trl"])]
        print(f"\ntinkerplug vs TRL: {speed:.2f}x tokens/s (per round: {', '.join(f'{x:.2f}' for x in rounds)}; "
              f"target >= {SPEEDUP_TARGET}x: {'met' if speed >= SPEEDUP_TARGET else 'NOT met'}), "
              f"{memory:.2f}x peak RSS (target <= 1: {'met' if memory <= 1 else 'NOT met'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny-chat", help="tiny-chat, real (the real_scale.py shape) or a model directory")
    parser.add_argument("--steps", type=int, default=6, help="steps per run; the first (warm-up) and the last are untimed")
    parser.add_argument("--batch", type=int, default=8, help="prompts per step")
    parser.add_argument("--group", type=int, default=8, help="samples per prompt")
    parser.add_argument("--max-tokens", type=int, default=12)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--rounds", type=int, default=2, help="runs per side, alternating which goes first")
    parser.add_argument("--sides", default="tinkerplug,trl")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--records", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    offline_env()
    if args.child:
        work = Path(args.out).parent / args.child
        work.mkdir(exist_ok=True)
        run = run_trl if args.child == "trl" else run_tinkerplug
        Path(args.out).write_text(json.dumps(run(args, Path(args.records), work)))
        return
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; {machine_line()}")
    sides = [s.strip() for s in args.sides.split(",")]
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model = real_model(work) if args.model == "real" else model_dir(args.model)
        records = work / "train.jsonl"
        make_records(records, args.batch * args.steps)
        print(f"GRPO on {args.model}: {args.batch} prompts x {args.group} samples, <= {args.max_tokens} tokens, "
              f"LoRA r{args.rank}, {args.steps} steps per run (first and last untimed), {args.rounds} rounds", flush=True)
        for round_index in range(args.rounds):
            for side in sides if round_index % 2 == 0 else sides[::-1]:
                result = run_side(side, args, model, records, work)
                if result is not None:
                    runs[side].append(result)
                    print(f"round {round_index} {side}: {result['tokens_per_s']:.0f} tokens/s, "
                          f"{result['step_s']:.3f} s/step, peak {result['peak_gb']:.2f} GB", flush=True)
    report({side: results for side, results in runs.items() if results}, args)
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; {machine_line()}")


def real_model(work: Path) -> str:
    """real_scale.py's random-init Qwen3 at the real vocabulary, with tiny-chat's renderer."""
    from real_scale import VOCAB, build_model

    directory = work / "model"
    build_model(directory, 256, 4, VOCAB)
    (directory / "tinkerplug.json").write_text(json.dumps({"renderer": "qwen3_instruct"}) + "\n")
    return str(directory)


if __name__ == "__main__":
    main()
