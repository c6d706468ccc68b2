"""DPO through ``tinkerplug run`` (objective = "dpo", local backend) against TRL's DPOTrainer.

The same pairs, beta, LoRA and optimizer on both sides. The pairs: "Reverse: WORD" chat turns
(the words of ``examples/grpo``), the reversed word chosen over the word copied back.
``--batch`` pairs per step, beta 0.1, the sigmoid DPO loss (mean over the pairs), reference
logprobs from the base model, LoRA rank ``--rank`` / alpha 32 on attention + MLP, Adam at a
constant LR.

- tinkerplug: a config file with ``objective = "dpo"`` run by ``tinkerplug run`` in the child
  process (the local backend: reference logprobs of each pair from the base model, the DPO
  loss through ``forward_backward_custom`` in one pass); step wall times from the lines of its
  ``metrics.jsonl`` as they appear (``rl_vs_trl.watch_steps``). ``--sides sdk,trl``: the same
  through the SDK surface by hand (the cookbook's ``train_dpo`` calls), chat-templated as TRL.
- trl: ``DPOTrainer`` with a peft ``LoraConfig`` (its reference is the model with the adapter
  disabled: one extra forward per step), sequential batches.

The pairs reach both sides as TRL's ``prompt``/``chosen``/``rejected`` message lists. Each
side runs in its own process (peak RSS is that process's); sides alternate over
``--rounds``; the first (warm-up) and last step of each run are untimed. Tokens per step:
every token of every chosen and rejected sequence (prompt + reply). ``--model real``: the real-vocabulary Qwen3 of
``real_scale.py``.

    python benchmarks/dpo_vs_trl.py [--model tiny-chat|real|DIR] [--steps 6] [--rounds 2]

Needs ``pip install -e '.[bench]'`` for the TRL side. Target: tinkerplug >= 2x TRL's tokens/s.
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
ALPHA, BETA, SEED = 32, 0.1, 0
SPEEDUP_TARGET = 2.0


def make_pairs(path: Path, n: int) -> None:
    rng = random.Random(SEED)
    with path.open("w") as f:
        for _ in range(n):
            word = "".join(rng.choices(string.ascii_lowercase, k=rng.randint(4, 7)))
            f.write(json.dumps({"prompt": [{"role": "user", "content": f"Reverse: {word}"}],
                                "chosen": [{"role": "assistant", "content": word[::-1]}],
                                "rejected": [{"role": "assistant", "content": word}]}) + "\n")


# -- the two sides (each in its own process) ------------------------------------------------


def sequences(tokenizer, pair: dict) -> list[tuple[list[int], int]]:
    """(tokens, prompt length) of the chosen and the rejected conversation, chat-templated."""
    prompt = tokenizer.apply_chat_template(pair["prompt"], tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer.encode(prompt, add_special_tokens=False)
    out = []
    for key in ("chosen", "rejected"):
        full = tokenizer.apply_chat_template(pair["prompt"] + pair[key], tokenize=False)
        out.append((prompt_ids + tokenizer.encode(full[len(prompt):], add_special_tokens=False), len(prompt_ids)))
    return out


def dpo_datum(tokens: list[int], n_prompt: int):
    from tinker import types

    weights = [0.0] * (n_prompt - 1) + [1.0] * (len(tokens) - n_prompt)
    return types.Datum(model_input=types.ModelInput.from_ints(tokens[:-1]),
                       loss_fn_inputs={"target_tokens": tokens[1:], "weights": weights})


def dpo_loss(reference: list[float]):
    """The sigmoid DPO loss over (chosen, rejected) datum pairs, a mean over the pairs."""
    import torch

    def loss_fn(data, logprobs_list):
        sums = [(lp * d.loss_fn_inputs["weights"].to_torch()).sum() for d, lp in zip(data, logprobs_list)]
        margins = [BETA * ((sums[i] - reference[i]) - (sums[i + 1] - reference[i + 1])) for i in range(0, len(sums), 2)]
        margin = torch.stack(margins)
        loss = -torch.nn.functional.logsigmoid(margin).mean()
        return loss, {"dpo_loss": float(loss.detach()), "accuracy": float((margin > 0).float().mean())}

    return loss_fn


def run_tinkerplug(args: argparse.Namespace, pairs: list[dict], work: Path) -> dict:
    import shutil

    from rl_vs_trl import watch_steps
    from tinkerplug import cli
    from transformers import AutoTokenizer

    shutil.rmtree(work / "run", ignore_errors=True)  # the previous round's
    data = work / "pairs.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in pairs))
    config = work / "config.toml"
    config.write_text("\n".join([
        f"base_model = {json.dumps(args.model_dir)}", 'objective = "dpo"', f"lora_rank = {args.rank}",
        "train_unembed = false", f"learning_rate = {args.lr}", f"batch_size = {args.batch}", f"num_steps = {args.steps}",
        "max_length = 128", f"seed = {SEED}", f"run_dir = {json.dumps(str(work / 'run'))}", "eval_every = 0", "save_every = 0",
        "[schedule]", 'lr_schedule = "constant"', "[dpo]", f"beta = {BETA}", "[data]", f"train = {json.dumps(str(data))}",
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
        seen.append(None)
    arrived = [t for t in seen if t is not None]
    metrics = [json.loads(x) for x in (work / "run" / "metrics.jsonl").read_text().splitlines()]
    steps = [m for m in metrics if "time/step_s" in m][: len(arrived)]
    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    tokens = [sum(len(t) for pair in pairs[i * args.batch : (i + 1) * args.batch] for t, _ in sequences(tokenizer, pair))
              for i in range(len(steps))]  # the same count as TRL's side
    return dict(times=[b - a for a, b in zip([started] + arrived, arrived)], tokens=tokens,
                losses=[m["dpo/loss"] for m in steps], peak_gb=peak_rss_gb())


def run_sdk(args: argparse.Namespace, pairs: list[dict], work: Path) -> dict:
    from tinker import types

    from tinkerplug_local import ServiceClient

    times, tokens, losses = [], [], []
    adam = types.AdamParams(learning_rate=args.lr, beta1=0.9, beta2=0.999, eps=1e-8)
    with ServiceClient(checkpoint_dir=work / "checkpoints") as service:
        trainer = service.create_lora_training_client(args.model_dir, rank=args.rank, seed=SEED, train_unembed=False).result()
        reference = service.create_sampling_client(base_model=args.model_dir)
        tokenizer = trainer.get_tokenizer()
        steps = [[s for pair in pairs[i * args.batch : (i + 1) * args.batch] for s in sequences(tokenizer, pair)]
                 for i in range(args.steps)]  # tokenized before the clock starts, as TRL does
        for seqs in steps:
            started = time.perf_counter()
            data = [dpo_datum(t, n) for t, n in seqs]
            futures = [reference.compute_logprobs(types.ModelInput.from_ints(t)) for t, _ in seqs]
            ref = [sum(lp for lp in f.result()[n:]) for f, (_, n) in zip(futures, seqs)]
            out = trainer.forward_backward_custom(data, dpo_loss(ref)).result()
            trainer.optim_step(adam).result()
            times.append(time.perf_counter() - started)
            tokens.append(sum(len(t) for t, _ in seqs))
            losses.append(out.metrics["dpo_loss"])
    return dict(times=times, tokens=tokens, losses=losses, peak_gb=peak_rss_gb())


def run_trl(args: argparse.Namespace, pairs: list[dict], work: Path) -> dict:
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import DPOConfig, DPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(args.model_dir)
    rows = pairs[: args.steps * args.batch]
    clock, times, logged = trl_step_clock()
    model = AutoModelForCausalLM.from_pretrained(args.model_dir, dtype=torch.float32)
    config = DPOConfig(
        output_dir=str(work / "trl"), per_device_train_batch_size=args.batch, max_steps=args.steps, beta=BETA,
        learning_rate=args.lr, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0, adam_beta1=0.9,
        adam_beta2=0.999, adam_epsilon=1e-8, max_grad_norm=0.0, logging_steps=1, save_strategy="no", report_to=[],
        use_cpu=True, bf16=False, seed=SEED, dataloader_num_workers=0, disable_tqdm=True, train_sampling_strategy="sequential",
    )
    peft = LoraConfig(r=args.rank, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=LORA_TARGETS)
    trainer = DPOTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tokenizer,
                         peft_config=peft, callbacks=[clock])
    trainer.train()
    losses = [float(r["loss"]) for r in logged if "loss" in r]
    tokens = [sum(len(t) for pair in rows[i * args.batch : (i + 1) * args.batch] for t, _ in sequences(tokenizer, pair))
              for i in range(args.steps)]
    return dict(times=times, tokens=tokens, losses=losses, peak_gb=peak_rss_gb())


# -- the driver ----------------------------------------------------------------------------


def run_side(side: str, args: argparse.Namespace, model: str, pairs: Path, work: Path) -> dict | None:
    out = work / f"{side}.json"
    command = [sys.executable, __file__, "--child", side, "--model-dir", model, "--pairs", str(pairs), "--out", str(out),
               "--steps", str(args.steps), "--batch", str(args.batch), "--rank", str(args.rank), "--lr", str(args.lr)]
    proc = subprocess.run(command, cwd=work, capture_output=True, text=True)
    if proc.returncode != 0:
        print(f"{side}: failed (exit {proc.returncode})\n{proc.stderr[-3000:]}")
        return None
    result = json.loads(out.read_text())
    n = min(len(result["times"]), len(result["tokens"]))
    # The first step is warm-up; the last is left out too: a run's last metrics lines are
    # written together at its end, so the time between them says nothing (both sides alike).
    timed = slice(1, n - 1)
    seconds = sum(result["times"][timed])
    return dict(tokens_per_s=sum(result["tokens"][timed]) / seconds, pairs_per_s=args.batch * (n - 1) / seconds,
                step_s=median(result["times"][timed]), peak_gb=result["peak_gb"],
                first_loss=result["losses"][0], last_loss=result["losses"][-1])


def report(runs: dict[str, list[dict]]) -> None:
    print("\n| side | tokens/s | pairs/s | median step s | peak RSS GB | first loss | last loss |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    summary = {}
    for side, results in runs.items():
        summary[side] = r = {k: median([x[k] for x in results]) for k in results[0]}
        print(f"| {side} | {r['tokens_per_s']:.0f} | {r['pairs_per_s']:.1f} | {r['step_s']:.3f} | {r['peak_gb']:.2f} | "
              f"{r['first_loss']:.4f} | {r['last_loss']:.4f} |")
    print("(medians over rounds; per round: " + "; ".join(
        f"{side} " + ", ".join(f"{r['tokens_per_s']:.0f}" for r in results) for side, results in runs.items()) + " tokens/s)")
    ours_name = "tinkerplug" if "tinkerplug" in summary else "sdk"
    if ours_name in summary and "trl" in summary:
        ours, theirs = summary[ours_name], summary["trl"]
        speed, memory = ours["tokens_per_s"] / theirs["tokens_per_s"], ours["peak_gb"] / theirs["peak_gb"]
        rounds = [a["tokens_per_s"] / b["tokens_per_s"] for a, b in zip(runs[ours_name], runs["trl"])]
        print(f"\n{ours_name} vs TRL: {speed:.2f}x tokens/s (per round: {', '.join(f'{x:.2f}' for x in rounds)}; "
              f"target >= {SPEEDUP_TARGET}x: {'met' if speed >= SPEEDUP_TARGET else 'NOT met'}), "
              f"{memory:.2f}x peak RSS (target <= 1: {'met' if memory <= 1 else 'NOT met'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny-chat", help="tiny-chat, real (the real_scale.py shape) or a model directory")
    parser.add_argument("--steps", type=int, default=6, help="steps per run; the first (warm-up) and the last are untimed")
    parser.add_argument("--batch", type=int, default=8, help="pairs per step")
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--rounds", type=int, default=2, help="runs per side, alternating which goes first")
    parser.add_argument("--sides", default="tinkerplug,trl", help="comma-separated: tinkerplug, trl, sdk")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--pairs", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    offline_env()
    if args.child:
        work = Path(args.out).parent / args.child
        work.mkdir(exist_ok=True)
        pairs = [json.loads(line) for line in Path(args.pairs).read_text().splitlines()]
        run = {"trl": run_trl, "sdk": run_sdk, "tinkerplug": run_tinkerplug}[args.child]
        Path(args.out).write_text(json.dumps(run(args, pairs, work)))
        return
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; {machine_line()}")
    sides = [s.strip() for s in args.sides.split(",")]
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.model == "real":
            from rl_vs_trl import real_model

            model = real_model(work)
        else:
            model = model_dir(args.model)
        pairs = work / "pairs.jsonl"
        make_pairs(pairs, args.batch * args.steps)
        print(f"DPO on {args.model}: {args.batch} pairs per step, beta {BETA}, LoRA r{args.rank}, "
              f"{args.steps} steps per run (first and last untimed), {args.rounds} rounds", flush=True)
        for round_index in range(args.rounds):
            for side in sides if round_index % 2 == 0 else sides[::-1]:
                result = run_side(side, args, model, pairs, work)
                if result is not None:
                    runs[side].append(result)
                    print(f"round {round_index} {side}: {result['tokens_per_s']:.0f} tokens/s, "
                          f"{result['step_s']:.3f} s/step, peak {result['peak_gb']:.2f} GB", flush=True)
    report({side: results for side, results in runs.items() if results})
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; {machine_line()}")


if __name__ == "__main__":
    main()
