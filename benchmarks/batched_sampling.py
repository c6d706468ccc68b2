"""Eval-set generation on the local backend: every prompt submitted at once vs one at a time.

Both sides go through the SDK surface exactly as an evaluator does: a ``SamplingClient``
opened on weights saved with ``save_weights_for_sampler``, prompts rendered with the model's
renderer, ``sample(prompt, 1, SamplingParams(temperature=0, stop=renderer stops))``.
"batched" submits every prompt before awaiting any (the backend runs the queued requests as
one padded batch); "one at a time" awaits each reply before sending the next prompt.
Greedy decoding, so both sides must return the same tokens: the script checks that.

Rounds alternate between the sides (the first side swaps every round); the script prints
per-side medians and the median of per-round ratios. Target: ratio >= 4.

    python benchmarks/batched_sampling.py [--model tiny-chat] [--data examples/quickstart/heldout.jsonl]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

from common import machine_line, median, model_dir, offline_env

ROOT = Path(__file__).resolve().parents[1]


def prompts_of(path: Path, limit: int | None) -> list[list[dict]]:
    """Each record's conversation up to its last assistant message."""
    lines = [line for line in path.read_text().splitlines() if line.strip()][:limit]
    return [json.loads(line)["messages"][:-1] for line in lines]


async def batched(client, prompts, params) -> list[list[int]]:
    futures = [client.sample(p, 1, params) for p in prompts]
    return [r.sequences[0].tokens for r in await asyncio.gather(*(f.result_async() for f in futures))]


async def one_at_a_time(client, prompts, params) -> list[list[int]]:
    return [(await client.sample(p, 1, params).result_async()).sequences[0].tokens for p in prompts]


async def timed(side, client, prompts, params) -> tuple[float, list[list[int]]]:
    started = time.perf_counter()
    tokens = await side(client, prompts, params)
    return time.perf_counter() - started, tokens


async def run(args: argparse.Namespace) -> None:
    from tinker import types
    from tinker_cookbook.renderers import get_renderer

    from tinkerplug.models import model_metadata
    from tinkerplug_local import ServiceClient

    model = model_dir(args.model)
    renderer_name = args.renderer or model_metadata(model).get("renderer") or "qwen3_instruct"
    messages = prompts_of(Path(args.data), args.limit)
    with tempfile.TemporaryDirectory() as tmp, ServiceClient(checkpoint_dir=tmp, device="cpu") as service:
        training = service.create_lora_training_client(model, rank=16, seed=0).result()
        renderer = get_renderer(renderer_name, training.get_tokenizer())
        path = training.save_weights_for_sampler("bench").result().path
        client = service.create_sampling_client(model_path=path)
        prompts = [renderer.build_generation_prompt(m) for m in messages]
        params = types.SamplingParams(
            max_tokens=args.max_tokens, temperature=0.0, stop=renderer.get_stop_sequences(), seed=0
        )
        sides = {"batched": batched, "one at a time": one_at_a_time}
        outputs = {name: await side(client, prompts, params) for name, side in sides.items()}  # warm-up
        seconds: dict[str, list[float]] = {name: [] for name in sides}
        ratios = []
        for round_index in range(args.rounds):
            order = list(sides.items()) if round_index % 2 == 0 else list(sides.items())[::-1]
            this_round = {}
            for name, side in order:
                this_round[name], tokens = await timed(side, client, prompts, params)
                if tokens != outputs[name]:
                    raise SystemExit(f"{name}: greedy outputs changed between rounds")
                seconds[name].append(this_round[name])
            ratios.append(this_round["one at a time"] / this_round["batched"])

    same = sum(a == b for a, b in zip(outputs["batched"], outputs["one at a time"]))
    generated = sum(len(t) for t in outputs["batched"])
    print(
        f"eval-set generation, local backend: model {args.model} (renderer {renderer_name}), "
        f"{len(prompts)} prompts from {args.data}, greedy, max_tokens {args.max_tokens}, "
        f"{generated} tokens generated; {args.rounds} rounds per side, interleaved"
    )
    for name, values in seconds.items():
        print(
            f"  {name:<14} median {median(values):7.3f} s  {len(prompts) / median(values):8.1f} prompts/s  "
            f"(rounds: {', '.join(f'{v:.3f}' for v in values)})"
        )
    ratio = median(ratios)
    print(
        f"  speed-up batched / one at a time: {ratio:.1f}x (median of per-round ratios; ratio of medians "
        f"{median(seconds['one at a time']) / median(seconds['batched']):.1f}x); target >= 4x: "
        f"{'met' if ratio >= 4 else 'NOT met'}"
    )
    print(f"  identical greedy outputs: {same}/{len(prompts)} prompts")
    print("  " + machine_line())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny-chat", help="shipped model name or model directory")
    parser.add_argument("--renderer", default=None, help="default: the model's tinkerplug.json, else qwen3_instruct")
    parser.add_argument("--data", default=str(ROOT / "examples" / "quickstart" / "heldout.jsonl"))
    parser.add_argument("--limit", type=int, default=None, help="first N records only")
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    offline_env()
    asyncio.run(run(args))


if __name__ == "__main__":
    main()
