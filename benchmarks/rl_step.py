"""Where an RL step's time goes on the local backend: sample, snapshot, forward_backward, optim_step.

One GRPO step as the cookbook's ``rl_loop`` takes it, through the SDK surface: a sampler snapshot
(``save_weights_and_get_sampling_client``), ``batch`` prompts x ``group`` samples submitted
together, group-centred rewards (how close the reply is to the reversed word), then
``forward_backward(importance_sampling)`` and ``optim_step``. Each phase is timed on its own
(its futures awaited before the next phase starts); the table shows per-phase medians over the
steps after a warm-up step, and each phase's share of the step. A second table times the
snapshot against the disk round trip it replaces (``save_weights_for_sampler`` +
``create_sampling_client``), interleaved.

    python benchmarks/rl_step.py [--model tiny-chat] [--steps 8] [--batch 8] [--group 8] [--max-tokens 10]
"""

from __future__ import annotations

import argparse
import difflib
import random
import tempfile
import time

from common import machine_line, median, model_dir, offline_env

LETTERS = "abcdefghijklmnopqrstuvwxyz"


def prompts(renderer, rng: random.Random, n: int) -> list[tuple[object, str]]:
    words = ["".join(rng.choice(LETTERS) for _ in range(rng.randint(3, 7))) for _ in range(n)]
    return [(renderer.build_generation_prompt([{"role": "user", "content": f"Reverse: {w}"}]), w[::-1]) for w in words]


def datums(types, prompt, response, answer_of, renderer) -> list:
    """rl_loop's datums: prompt + sampled tokens, sampler logprobs, group-centred advantages."""
    from tinker_cookbook import renderers

    rewards = [difflib.SequenceMatcher(None, renderers.get_text_content(renderer.parse_response(s.tokens)[0]), answer_of).ratio()
               for s in response.sequences]
    mean = sum(rewards) / len(rewards)
    out = []
    for seq, reward in zip(response.sequences, rewards):
        ob = prompt.length - 1
        model_input = prompt.append(types.EncodedTextChunk(tokens=seq.tokens[:-1]))
        out.append(types.Datum(model_input=model_input, loss_fn_inputs={
            "target_tokens": [0] * ob + seq.tokens,
            "logprobs": [0.0] * ob + seq.logprobs,
            "advantages": [0.0] * ob + [reward - mean] * (model_input.length - ob),
        }))
    return out, mean


def one_step(types, trainer, renderer, rng, args) -> tuple[dict[str, float], float]:
    times: dict[str, float] = {}
    started = time.perf_counter()
    sampler = trainer.save_weights_and_get_sampling_client().result()
    times["snapshot"] = time.perf_counter() - started

    batch = prompts(renderer, rng, args.batch)
    started = time.perf_counter()
    params = types.SamplingParams(max_tokens=args.max_tokens, stop=renderer.get_stop_sequences())
    futures = [sampler.sample(p, args.group, params) for p, _ in batch]
    responses = [f.result() for f in futures]
    times["sample"] = time.perf_counter() - started

    data, rewards = [], []
    for (prompt, answer), response in zip(batch, responses):
        group, mean = datums(types, prompt, response, answer, renderer)
        data += group
        rewards.append(mean)
    started = time.perf_counter()
    trainer.forward_backward(data, "importance_sampling").result()
    times["forward_backward"] = time.perf_counter() - started
    started = time.perf_counter()
    trainer.optim_step(types.AdamParams(learning_rate=args.lr, beta1=0.9, beta2=0.95, eps=1e-8)).result()
    times["optim_step"] = time.perf_counter() - started
    return times, sum(rewards) / len(rewards)


def snapshot_vs_disk(trainer, service, rounds: int) -> tuple[float, float]:
    memory, disk = [], []
    for i in range(rounds):
        started = time.perf_counter()
        trainer.save_weights_and_get_sampling_client().result()
        memory.append(time.perf_counter() - started)
        started = time.perf_counter()
        path = trainer.save_weights_for_sampler(f"bench-{i}").result().path
        service.create_sampling_client(model_path=path).result()
        disk.append(time.perf_counter() - started)
    return median(memory), median(disk)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-chat")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--group", type=int, default=8)
    parser.add_argument("--max-tokens", type=int, default=10)
    parser.add_argument("--lr", type=float, default=3e-3)
    args = parser.parse_args()
    offline_env()
    from tinker import types
    from tinker_cookbook.renderers import get_renderer

    from tinkerplug.models import model_metadata
    from tinkerplug_local import ServiceClient

    model = model_dir(args.model)
    with tempfile.TemporaryDirectory() as tmp, ServiceClient(checkpoint_dir=tmp) as service:
        trainer = service.create_lora_training_client(model, rank=8, seed=0).result()
        renderer = get_renderer(model_metadata(model).get("renderer") or "qwen3_instruct", trainer.get_tokenizer())
        rng = random.Random(0)
        steps = [one_step(types, trainer, renderer, rng, args) for _ in range(args.steps + 1)][1:]
        memory, disk = snapshot_vs_disk(trainer, service, 5)
    phases = ["sample", "snapshot", "forward_backward", "optim_step"]
    medians = {p: median([s[p] for s, _ in steps]) for p in phases}
    total = median([sum(s.values()) for s, _ in steps])
    print(f"RL step on {args.model}: {args.batch} prompts x {args.group} samples, <= {args.max_tokens} tokens each, "
          f"{args.steps} steps after a warm-up")
    print(machine_line())
    print(f"| phase | median ms | share of step |\n| --- | --- | --- |")
    for p in phases:
        print(f"| {p} | {medians[p] * 1e3:.1f} | {medians[p] / total:.1%} |")
    print(f"| step (median of sums) | {total * 1e3:.1f} | |")
    print(f"\n| sampler for the next step | median ms |\n| --- | --- |")
    print(f"| in-memory snapshot | {memory * 1e3:.1f} |\n| save_weights_for_sampler + create_sampling_client | {disk * 1e3:.1f} |")
    print(f"\nmean reward per step: {' '.join(f'{r:.3f}' for _, r in steps)}")


if __name__ == "__main__":
    main()
