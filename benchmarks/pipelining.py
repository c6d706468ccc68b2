"""Steps/s of the synchronous vs the pipelined step executor on a clocked service.

The local backend is wrapped in ``clocked_backend.ClockedTrainingClient``, which answers on
the Tinker service's clock (one training step per cycle, results at the end of a cycle; see
that module). The executors are the real ones, made by the ``make_step_executor`` hook from
a real ``RunConfig`` (``executor``, ``submit_ahead``), and each step's learning rate comes
from the ``lr_for_step`` hook, as in the training loop.

Steady-state throughput is measured from the first to the last finished step of a round;
rounds alternate between the variants and the script prints medians, cycles per step, the
fraction of the one-step-per-cycle limit and the speed-up over ``sync``. Targets: pipelined
(default ``submit_ahead``) >= 1.9x sync and >= 0.95 of the limit.

``--joins next`` (default) is the documented rule: a request must be queued when a cycle
starts, or it waits for the next one. ``--joins current`` lets a request join the cycle
running when it is submitted (completing at that cycle's end), a kinder service.

``--http`` measures the same over the real SDK and real HTTP: it starts ``tinkerplug serve
--clock-ms CYCLE`` (the clock runs in the server, with the documented "next cycle" rule) and
trains through an unmodified ``tinker.ServiceClient`` pointed at it; every request then also
pays an HTTP round trip and the SDK's own queueing.

    python benchmarks/pipelining.py [--cycle-ms 100] [--joins next|current] [--steps 12] [--rounds 3] [--http]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from contextlib import contextmanager, nullcontext

from clocked_backend import ClockedTrainingClient, ServiceClock
from common import machine_line, median, model_dir, offline_env

SEED = 0


def synthetic_data(vocab: int, batch: int, seq_len: int) -> list:
    import random

    from tinker import types

    rng = random.Random(SEED)
    data = []
    for _ in range(batch):
        row = [rng.randrange(10, vocab) for _ in range(seq_len + 1)]
        weights = [0.0] * (seq_len // 2) + [1.0] * (seq_len - seq_len // 2)
        data.append(
            types.Datum(
                model_input=types.ModelInput.from_ints(row[:-1]),
                loss_fn_inputs={"target_tokens": row[1:], "weights": weights},
            )
        )
    return data


def run_config(model: str, executor: str, submit_ahead: int, num_steps: int):
    """A real run config, with the plugins' tables ([executor], [schedule])."""
    from pathlib import Path

    from tinkerplug.assemble import plugin_schema
    from tinkerplug.config import ConfigOrigin, build_config
    from tinkerplug.plugin_loader import load_plugins

    data = {
        "base_model": model, "data": {"train": "unused.jsonl"}, "learning_rate": 1e-3, "num_steps": num_steps,
        "executor": {"name": executor, "submit_ahead": submit_ahead},
    }
    return build_config(data, ConfigOrigin(Path("benchmarks/pipelining.py")), plugin_schema(load_plugins()))


async def one_round(plugins, config, client, data, num_steps: int) -> tuple[float, list[float]]:
    """Train ``num_steps`` steps as the loop does; return steady-state steps/s and losses."""
    from tinker import types

    executor = plugins.first("make_step_executor", config=config, training_client=client)
    finished = []
    for step in range(num_steps):
        lr = plugins.first("lr_for_step", step=step, num_steps=num_steps, config=config)
        adam = types.AdamParams(learning_rate=float(lr), beta1=0.9, beta2=0.95, eps=1e-8)
        finished += await executor.submit(step, data, adam)
    finished += await executor.drain()
    assert [r.step for r in finished] == list(range(num_steps)), "steps finished out of order"
    span = finished[-1].finished_at - finished[0].finished_at
    return (num_steps - 1) / span, [r.mean_nll for r in finished]


@contextmanager
def served_client(model: str, cycle_ms: float, tmp: str):
    """An SDK training client on a ``tinkerplug serve --clock-ms`` subprocess (loopback)."""
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    import tinker

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "tinkerplug.cli", "serve", "--port", str(port), "--device", "cpu",
         "--checkpoint-dir", f"{tmp}/served", "--clock-ms", str(cycle_ms)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            try:
                urllib.request.urlopen(url + "/api/v1/healthz", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        service = tinker.ServiceClient(base_url=url, api_key="tml-benchmark")
        yield service.create_lora_training_client(model, rank=16, seed=SEED).result()
        service.close("success").result()
    finally:
        server.terminate()
        server.wait(30)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="tiny-chat")
    parser.add_argument("--cycle-ms", type=float, default=100.0, help="clock cycle length")
    parser.add_argument("--joins", choices=("next", "current"), default="next")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seq-len", type=int, default=16)
    parser.add_argument("--steps", type=int, default=12, help="steps per round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--submit-ahead", type=int, nargs="+", default=[0, 1, 2],
                        help="pipelined variants to time (2 is the config default)")
    parser.add_argument("--http", action="store_true",
                        help="over the real SDK and HTTP, against `tinkerplug serve --clock-ms` (always --joins next)")
    args = parser.parse_args()
    if args.http and args.joins != "next":
        parser.error("--http serves the documented clock only (--joins next)")
    offline_env()

    import json
    import time
    from pathlib import Path

    from tinkerplug.plugin_loader import load_plugins
    from tinkerplug_local import ServiceClient

    model = model_dir(args.model)
    vocab = json.loads((Path(model) / "config.json").read_text())["vocab_size"]
    data = synthetic_data(vocab, args.batch, args.seq_len)
    plugins = load_plugins()
    variants = [("sync", 0)] + [("pipelined", k) for k in args.submit_ahead]
    from tinkerplug_executors.settings import ExecutorSettings

    default_ahead = ExecutorSettings.model_fields["submit_ahead"].default

    with tempfile.TemporaryDirectory() as tmp, ServiceClient(checkpoint_dir=tmp, device="cpu") as service:
        local = service.create_lora_training_client(model, rank=16, seed=SEED).result()
        # Unclocked compute time of one step, for the reader to compare with the cycle.
        compute = []
        for _ in range(5):
            started = time.perf_counter()
            local.forward_backward(data, "cross_entropy").result()
            local.optim_step().result()
            compute.append(time.perf_counter() - started)

        clock = ServiceClock(args.cycle_ms / 1000, joins=args.joins)
        with (served_client(model, args.cycle_ms, tmp) if args.http else nullcontext(ClockedTrainingClient(local, clock))) as client:
            rates: dict[tuple[str, int], list[float]] = {v: [] for v in variants}
            for round_index in range(args.rounds):
                order = variants if round_index % 2 == 0 else variants[::-1]
                for executor, ahead in order:
                    config = run_config(model, executor, ahead, args.steps)
                    rate, _ = asyncio.run(one_round(plugins, config, client, data, args.steps))
                    rates[(executor, ahead)].append(rate)

    limit = 1000 / args.cycle_ms
    sync_rate = median(rates[("sync", 0)])
    where = "tinkerplug serve --clock-ms over the real SDK and HTTP" if args.http else "a clocked service (in process)"
    print(f"pipelining on {where}: cycle {args.cycle_ms:g} ms (limit {limit:.2f} steps/s), "
          f"requests join the {args.joins} cycle; model {args.model}, batch {args.batch} x {args.seq_len} tokens; "
          f"{args.rounds} rounds x {args.steps} steps, interleaved")
    print(f"  local compute per step (unclocked): median {1000 * median(compute):.1f} ms")
    print(f"  {'executor':<26}{'steps/s':>9}{'cycles/step':>13}{'of limit':>10}{'vs sync':>9}")
    for executor, ahead in variants:
        rate = median(rates[(executor, ahead)])
        label = executor if executor == "sync" else f"pipelined submit_ahead={ahead}"
        if executor == "pipelined" and ahead == default_ahead:
            label += " *"
        print(f"  {label:<26}{rate:9.2f}{limit / rate:13.2f}{rate / limit:10.3f}{rate / sync_rate:8.2f}x")
    if ("pipelined", default_ahead) in rates:
        rate = median(rates[("pipelined", default_ahead)])
        met = rate / sync_rate >= 1.9 and rate / limit >= 0.95
        print(f"  * the default: {rate / sync_rate:.2f}x sync, {rate / limit:.3f} of the limit; "
              f"targets >= 1.9x and >= 0.95: {'met' if met else 'NOT met'}")
    if not args.http:
        print(f"  results later than their cycle's end (local compute overran): {clock.overruns} of {clock.requests}"
              + (f", median {1000 * median(clock.late_s):.1f} ms late" if clock.late_s else ""))
    if clock.overruns > 0.1 * max(clock.requests, 1):
        print("  WARNING: the local compute often outlasts a cycle, so the backend, not the clock, "
              "limits the pipelined rates: use a longer --cycle-ms or a smaller --batch")
    print("  " + machine_line())


if __name__ == "__main__":
    main()
