"""An uploaded custom loss over ``serve`` vs the SDK's client-side two passes, timed.

The same DPO loss (per-datum form: prompt, chosen and rejected reply in one datum, masks, a
scalar reference margin) as a ``LossHandle`` twice: uploaded (``create_custom_loss``; the SDK
sends one ``forward_backward(data, "custom")``) and with ``loss_id=None`` (the SDK's way: a
``forward``, the loss on the client, a ``cross_entropy`` backward). Both go through the real
SDK to ``serve`` on a thread of this process; rounds alternate which side goes first; each
side's ``loss:sum`` must agree. Printed: medians per ``forward_backward_custom`` call.

    python benchmarks/uploaded_loss.py [--pairs 16] [--length 96] [--rounds 7]
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import random
import tempfile
import time

from common import machine_line, median, offline_env


def dpo(logprobs, chosen, rejected, ref_margin):
    import torch

    margin = (logprobs * chosen).sum() - (logprobs * rejected).sum() - ref_margin
    return -torch.nn.functional.logsigmoid(0.1 * margin), {"custom/margin:mean": margin}


def pairs(n: int, length: int, rng: random.Random) -> list:
    import torch
    from tinker import types

    out = []
    for _ in range(n):
        tokens = [rng.randrange(5, 200) for _ in range(length + 1)]
        third = length // 3
        chosen = torch.tensor([0.0] * third + [1.0] * third + [0.0] * (length - 2 * third))
        rejected = torch.tensor([0.0] * (2 * third) + [1.0] * (length - 2 * third))
        out.append(types.Datum(model_input=types.ModelInput.from_ints(tokens[:-1]), loss_fn_inputs={
            "target_tokens": tokens[1:], "chosen": chosen, "rejected": rejected, "ref_margin": torch.tensor(rng.uniform(-1, 1)),
        }))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--length", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    offline_env()
    import tinker

    from tinkerplug_local.server.thread import ThreadServer

    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; {machine_line()}")
    data = pairs(args.pairs, args.length, random.Random(0))
    times: dict[str, list[float]] = {"uploaded (one pass)": [], "SDK two passes": []}
    with tempfile.TemporaryDirectory() as tmp, ThreadServer(tmp) as server:
        service = tinker.ServiceClient(base_url=server.url, api_key="tml-benchmark")
        client = service.create_lora_training_client("tiny-chat", rank=16, seed=0).result()
        handle = service.create_custom_loss(dpo, {"logprobs": 1, "chosen": 1, "rejected": 1, "ref_margin": 0}).result()
        sides = {"uploaded (one pass)": handle, "SDK two passes": dataclasses.replace(handle, loss_id=None)}
        client.forward_backward_custom(data, handle).result()  # warm-up
        for round_ in range(args.rounds):
            order = list(sides) if round_ % 2 == 0 else list(sides)[::-1]
            losses = {}
            for name in order:
                start = time.perf_counter()
                losses[name] = client.forward_backward_custom(data, sides[name]).result().metrics["loss:sum"]
                times[name].append(time.perf_counter() - start)
            a, b = losses.values()
            assert abs(a - b) <= 1e-5 * max(1.0, abs(a)), losses
    print(f"tiny-chat, LoRA r16, {args.pairs} datums x {args.length} tokens, {args.rounds} rounds, through serve")
    for name, values in times.items():
        print(f"{name}: median {median(values) * 1000:.0f} ms per forward_backward_custom")
    print(f"after: {machine_line()}")


if __name__ == "__main__":
    main()
