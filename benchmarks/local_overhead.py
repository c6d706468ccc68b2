"""Training tokens/s of the local backend vs a hand-written torch + peft loop.

Both sides train the same LoRA (same model, rank, alpha, target modules, AdamW) on the same
batch (``--batch`` sequences of ``--seq-len`` tokens, loss on the second half of each) in
one process. The local backend is driven through the SDK surface, exactly as the training
loop drives it: ``forward_backward(list[Datum], "cross_entropy")`` and
``optim_step(AdamParams)`` futures, awaited with ``result()``. The hand-written loop starts
from ready-made tensors, so everything the SDK adds (Datum -> tensors, per-datum logprobs
back as ``TensorData``, the worker thread, grad-norm metric) counts against the backend.

Rounds alternate between the two sides (the first side swaps every round) so load drift on
a shared machine hits both; the script prints per-side medians and the median of per-round
ratios (wall time; target >= 0.95), and the same for the process's CPU time, which other
processes on a busy machine disturb less.

    python benchmarks/local_overhead.py [--model tiny-chat] [--batch 8] [--seq-len 64]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import warnings

from common import machine_line, median, model_dir, offline_env

RANK = 16
LORA_ALPHA = 32
LEARNING_RATE = 1e-3
SEED = 0


def synthetic_batch(vocab: int, batch: int, seq_len: int, seed: int) -> tuple[list[list[int]], list[list[float]]]:
    """Token rows of ``seq_len + 1`` tokens and weights (1 on the second half) per row."""
    import random

    rng = random.Random(seed)
    rows = [[rng.randrange(10, vocab) for _ in range(seq_len + 1)] for _ in range(batch)]
    weights = [[0.0] * (seq_len // 2) + [1.0] * (seq_len - seq_len // 2) for _ in range(batch)]
    return rows, weights


class LocalBackendSide:
    """The tinkerplug local backend through the SDK types."""

    name = "tinkerplug local"

    def __init__(self, model: str, rows: list[list[int]], weights: list[list[float]], checkpoint_dir: str):
        from tinker import types

        from tinkerplug_local import ServiceClient

        self.types = types
        self.service = ServiceClient(checkpoint_dir=checkpoint_dir, device="cpu", dtype="float32")
        self.client = self.service.create_lora_training_client(model, rank=RANK, seed=SEED).result()
        self.data = [
            types.Datum(
                model_input=types.ModelInput.from_ints(row[:-1]),
                loss_fn_inputs={"target_tokens": row[1:], "weights": w},
            )
            for row, w in zip(rows, weights)
        ]
        self.adam = types.AdamParams(learning_rate=LEARNING_RATE, beta1=0.9, beta2=0.95, eps=1e-8)

    def step(self) -> float:
        fwd_bwd = self.client.forward_backward(self.data, "cross_entropy")
        optim = self.client.optim_step(self.adam)
        loss = fwd_bwd.result().metrics["loss:sum"]
        optim.result()
        return loss

    def close(self) -> None:
        self.service.close()


class HandWrittenSide:
    """The loop one would write by hand with transformers + peft, from prepared tensors."""

    name = "torch + peft"

    def __init__(self, model: str, rows: list[list[int]], weights: list[list[float]]):
        import torch
        from peft import LoraConfig, get_peft_model
        from transformers import AutoModelForCausalLM

        self.torch = torch
        base = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32)
        base.requires_grad_(False)
        targets = sorted({n for n, m in base.named_modules() if isinstance(m, torch.nn.Linear)})
        torch.manual_seed(SEED)
        with warnings.catch_warnings():  # tied embeddings: peft warns about merging, not training
            warnings.simplefilter("ignore")
            self.model = get_peft_model(
                base, LoraConfig(r=RANK, lora_alpha=LORA_ALPHA, target_modules=targets, lora_dropout=0.0)
            )
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=LEARNING_RATE, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
        tokens = torch.tensor(rows)
        self.ids, self.targets = tokens[:, :-1], tokens[:, 1:]
        self.mask = torch.ones_like(self.ids)
        self.weights = torch.tensor(weights)

    def step(self) -> float:
        torch = self.torch
        logits = self.model(input_ids=self.ids, attention_mask=self.mask).logits.float()
        logprobs = -torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), self.targets.reshape(-1), reduction="none"
        ).reshape(self.targets.shape)
        loss = -(logprobs * self.weights).sum()
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    def close(self) -> None:
        pass


def timed(side: object, steps: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads) for ``steps`` steps."""
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        side.step()  # type: ignore[attr-defined]
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny-chat", help="shipped model name or model directory")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--steps", type=int, default=1, help="steps per side per round")
    parser.add_argument("--rounds", type=int, default=41)
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps per side first")
    args = parser.parse_args()
    offline_env()

    import json
    from pathlib import Path

    model = model_dir(args.model)
    vocab = json.loads((Path(model) / "config.json").read_text())["vocab_size"]
    rows, weights = synthetic_batch(vocab, args.batch, args.seq_len, SEED)
    tokens_per_step = args.batch * args.seq_len

    with tempfile.TemporaryDirectory() as tmp:
        local = LocalBackendSide(model, rows, weights, tmp)
        hand = HandWrittenSide(model, rows, weights)
        # Same model, data and loss: the first losses agree (a fresh LoRA has B = 0).
        first_local, first_hand = local.step(), hand.step()
        if abs(first_local - first_hand) > 1e-3 * max(1.0, abs(first_hand)):
            raise SystemExit(f"the two sides compute different losses: {first_local} vs {first_hand}")
        for _ in range(args.warmup):
            local.step()
            hand.step()

        rates: dict[str, list[float]] = {local.name: [], hand.name: []}
        cpu_ms: dict[str, list[float]] = {local.name: [], hand.name: []}
        ratios, cpu_ratios = [], []
        for round_index in range(args.rounds):
            order = (local, hand) if round_index % 2 == 0 else (hand, local)
            seconds = {side.name: timed(side, args.steps) for side in order}
            for name, (wall, cpu) in seconds.items():
                rates[name].append(tokens_per_step * args.steps / wall)
                cpu_ms[name].append(1000 * cpu / args.steps)
            ratios.append(seconds[hand.name][0] / seconds[local.name][0])
            cpu_ratios.append(seconds[hand.name][1] / seconds[local.name][1])
        local.close()

    print(f"local backend overhead: model {args.model}, batch {args.batch} x {args.seq_len} tokens, "
          f"LoRA r{RANK}, {args.rounds} rounds x {args.steps} steps per side, interleaved")
    for name, values in rates.items():
        print(f"  {name:<17} median {median(values):8.0f} tokens/s, {median(cpu_ms[name]):6.1f} CPU-ms/step  "
              f"(rounds, tokens/s: {', '.join(f'{v:.0f}' for v in values)})")
    ratio = median(ratios)
    print(f"  ratio local / hand-written: {ratio:.3f} (median of per-round ratios; "
          f"ratio of medians {median(rates[local.name]) / median(rates[hand.name]):.3f}); target >= 0.95: "
          f"{'met' if ratio >= 0.95 else 'NOT met'}")
    print(f"  CPU time ratio (hand-written / local, less sensitive to other load): {median(cpu_ratios):.3f}")
    print(f"  first-step loss sum: local {first_local:.6f}, hand-written {first_hand:.6f}")
    print("  " + machine_line())


if __name__ == "__main__":
    main()
