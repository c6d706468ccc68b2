"""What a mixed-adapter batch costs on the worker, in process (no HTTP): four adapters'
``forward_backward`` of 8 quickstart chats each run as one mixed batch, against the same 32
chats as one adapter's single request, and against the four requests run one after another.
Also one adapter's ``forward_backward`` + ``optim_step`` of 8 chats. Medians of interleaved
rounds, with the date and load.

    python benchmarks/mixed_batch_cost.py [--rounds 9] [--model tiny-chat] [--torch-threads 1]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import threading
import time

from common import machine_line, median, model_dir, offline_env
from serve_clients import datum, examples


def make_sides(clients: list, data: list) -> list:
    """The timed variants: each runs once per round."""
    from tinker import types

    host = clients[0]._host

    def one_adapter_32() -> None:
        clients[0].forward_backward(data, "cross_entropy").result()

    def mixed_4x8() -> None:
        release = threading.Event()
        host.worker.submit(lambda: release.wait(60))  # queue all four, then let them run together
        futures = [c.forward_backward(data[i * 8 : i * 8 + 8], "cross_entropy") for i, c in enumerate(clients)]
        release.set()
        [f.result() for f in futures]

    def one_by_one_4x8() -> None:
        for i, c in enumerate(clients):
            c.forward_backward(data[i * 8 : i * 8 + 8], "cross_entropy").result()

    def step_of_8() -> None:
        clients[0].forward_backward(data[:8], "cross_entropy")
        clients[0].optim_step(types.AdamParams(learning_rate=0.0)).result()

    return [one_adapter_32, mixed_4x8, one_by_one_4x8, step_of_8]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--model", default="tiny-chat")
    parser.add_argument("--torch-threads", type=int, default=0,
                        help="torch's threads on every thread (OMP_NUM_THREADS; 0: torch's default)")
    args = parser.parse_args()
    if args.torch_threads:
        os.environ["OMP_NUM_THREADS"] = str(args.torch_threads)  # read when torch loads, below
    offline_env()
    from tinkerplug_local import ServiceClient

    print(f"# mixed_batch_cost: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {args.model}, LoRA r8")
    print("# " + machine_line())
    with tempfile.TemporaryDirectory() as tmp:
        service = ServiceClient(checkpoint_dir=tmp, device="cpu", mixed_batches=True)
        clients = [service.create_lora_training_client(model_dir(args.model), rank=8, seed=i).result() for i in range(4)]
        for i, client in enumerate(clients):
            client.lane = f"key{i}"  # as serve gives each API key its lane
        data = [datum(*row) for row in examples(clients[0].get_tokenizer(), "train.jsonl", 32)]
        sides = make_sides(clients, data)
        times: dict[str, list[float]] = {side.__name__: [] for side in sides}
        for _ in range(args.rounds):
            for side in sides:
                start = time.perf_counter()
                side()
                times[side.__name__].append(time.perf_counter() - start)
        merged = clients[0]._host.mixed_runs
        service.close()
    for name, values in times.items():
        print(f"{name}: {median(values) * 1e3:.1f} ms")
    print(f"mixed batches run: {merged} (of {args.rounds} mixed_4x8 rounds)")
    print("# " + machine_line())


if __name__ == "__main__":
    main()
