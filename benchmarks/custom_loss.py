"""``forward_backward_custom`` on the local backend: one forward pass vs the SDK's two.

The SDK runs a custom loss on the client: ``forward`` for the logprobs, the user's loss and its
gradient on copies of them, then ``forward_backward(cross_entropy)`` with weights = -gradient.
The local backend keeps the graph of one pass instead. "two passes" below is the SDK's way,
reproduced through the same local backend (``forward``, then ``forward_backward`` with
weights = -grad); "one pass" is ``forward_backward_custom``. The loss is DPO's (the cookbook's
``train_dpo`` shape: chosen/rejected pairs, weighted sums of logprobs against fixed reference
values). Rounds alternate which side goes first; the script checks both give the same LoRA
gradient and prints medians.

    python benchmarks/custom_loss.py [--model tiny-chat] [--pairs 16] [--length 96] [--rounds 7]
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time

from common import machine_line, median, model_dir, offline_env


def dpo_loss(reference: list[float], beta: float = 0.1):
    import torch

    def loss_fn(data, logprobs_list):
        scores = [torch.dot(lp, d.loss_fn_inputs["weights"].to_torch()) for d, lp in zip(data, logprobs_list)]
        margins = [beta * ((scores[i] - reference[i]) - (scores[i + 1] - reference[i + 1])) for i in range(0, len(scores), 2)]
        loss = -torch.nn.functional.logsigmoid(torch.stack(margins)).mean()
        return loss, {"dpo_loss": float(loss.detach())}

    return loss_fn


def two_passes(client, data, loss_fn, types):
    """The SDK's client-side path, against the local backend."""
    forward = client.forward(data, "cross_entropy").result()
    leaves = [o["logprobs"].to_torch().clone().requires_grad_(True) for o in forward.loss_fn_outputs]
    loss, _ = loss_fn(data, leaves)
    loss.backward()
    linear = [types.Datum(model_input=d.model_input, loss_fn_inputs={"target_tokens": d.loss_fn_inputs["target_tokens"],
                                                                      "weights": types.TensorData.from_torch(-leaf.grad)})
              for d, leaf in zip(data, leaves)]
    client.forward_backward(linear, "cross_entropy").result()


def grads_and_reset(client):
    grads = [p.grad.clone() for p in client._params()]
    for p in client._params():
        p.grad = None
    return grads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny-chat")
    parser.add_argument("--pairs", type=int, default=16)
    parser.add_argument("--length", type=int, default=96)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    offline_env()
    import torch
    from tinker import types

    from tinkerplug_local import ServiceClient

    rng = random.Random(0)
    data = []
    for _ in range(2 * args.pairs):
        tokens = [rng.randrange(5, 400) for _ in range(args.length + 1)]
        weights = [0.0] * (args.length // 2) + [1.0] * (args.length - args.length // 2)
        data.append(types.Datum(model_input=types.ModelInput.from_ints(tokens[:-1]),
                                loss_fn_inputs={"target_tokens": tokens[1:], "weights": weights}))
    reference = [rng.uniform(-300, -200) for _ in data]
    loss_fn = dpo_loss(reference)
    times = {"one pass": [], "two passes": []}
    with tempfile.TemporaryDirectory() as tmp, ServiceClient(checkpoint_dir=tmp) as service:
        client = service.create_lora_training_client(model_dir(args.model), rank=8, seed=0).result()
        client.forward_backward_custom(data, loss_fn).result()  # warm-up
        grads_and_reset(client)
        sides = {"one pass": lambda: client.forward_backward_custom(data, loss_fn).result(),
                 "two passes": lambda: two_passes(client, data, loss_fn, types)}
        grads = {}
        for r in range(args.rounds):
            for name in (list(sides) if r % 2 == 0 else list(sides)[::-1]):
                started = time.perf_counter()
                sides[name]()
                times[name].append(time.perf_counter() - started)
                grads[name] = grads_and_reset(client)
        for a, b in zip(grads["one pass"], grads["two passes"]):
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)
    one, two = median(times["one pass"]), median(times["two passes"])
    print(f"forward_backward_custom, DPO loss, {2 * args.pairs} sequences x {args.length} tokens, {args.model}, "
          f"median of {args.rounds} rounds")
    print(machine_line())
    print("| path | median ms |\n| --- | --- |")
    print(f"| one pass (local forward_backward_custom) | {one * 1e3:.1f} |\n| two passes (the SDK's way) | {two * 1e3:.1f} |")
    print(f"two passes / one pass: {two / one:.2f}x; same LoRA gradients: yes")


if __name__ == "__main__":
    main()
