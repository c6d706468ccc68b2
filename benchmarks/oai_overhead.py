"""What the OpenAI-compatible API costs over the SDK's own sampling, on one checkpoint.

The same greedy request (one chat prompt, ``--max-tokens`` tokens) through ``tinkerplug serve``,
interleaved over ``--rounds`` rounds: the SDK's ``SamplingClient.sample`` (protobuf, futures
polled), ``openai`` chat completions, streamed chat completions (time to the last event), and
``openai`` completions of the same prompt tokens. Medians in ms, with the machine's load.

    python benchmarks/oai_overhead.py [--rounds 15] [--max-tokens 16]
"""

from __future__ import annotations

import argparse
import datetime
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import machine_line, median, offline_env  # noqa: E402

KEY = "tml-bench"
CHAT = [{"role": "user", "content": "uppercase: hello world"}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()
    offline_env()
    import openai
    import tinker
    from tinker import types

    from tinkerplug_local.server.routes_oai import render_chat
    from tinkerplug_local.server.thread import ThreadServer

    with ThreadServer(Path(tempfile.mkdtemp()) / "checkpoints", api_keys=[KEY]) as server:
        service = tinker.ServiceClient(base_url=server.url, api_key=KEY)
        path = service.create_lora_training_client("tiny-chat", rank=8, seed=0).result().save_weights_for_sampler("bench").result().path
        sampler = service.create_sampling_client(model_path=path).result()
        client = openai.OpenAI(base_url=server.url + "/oai/api/v1", api_key=KEY)
        client.chat.completions.create(model=path, messages=CHAT, max_tokens=1)  # load the adapter once
        model = server.state.oai_models.get(path)
        prompt = render_chat(model, CHAT)
        stop = model.renderer.get_stop_sequences()
        params = types.SamplingParams(max_tokens=args.max_tokens, temperature=0.0, stop=stop)
        variants = {
            "SDK SamplingClient.sample": lambda: sampler.sample(types.ModelInput.from_ints(prompt), 1, params).result(),
            "openai chat.completions": lambda: client.chat.completions.create(model=path, messages=CHAT, max_tokens=args.max_tokens, temperature=0),
            "openai chat.completions, stream": lambda: list(client.chat.completions.create(
                model=path, messages=CHAT, max_tokens=args.max_tokens, temperature=0, stream=True)),
            "openai completions (token ids)": lambda: client.completions.create(model=path, prompt=prompt, max_tokens=args.max_tokens, temperature=0),
        }
        times: dict[str, list[float]] = {name: [] for name in variants}
        for _ in range(args.rounds):
            for name, call in variants.items():
                start = time.perf_counter()
                call()
                times[name].append((time.perf_counter() - start) * 1000)
    print(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; tiny-chat, LoRA r8 sampler checkpoint, "
          f"{len(prompt)} prompt tokens, up to {args.max_tokens} greedy tokens, {args.rounds} rounds interleaved")
    print(machine_line())
    for name, values in times.items():
        print(f"{name:34s} median {median(values):7.1f} ms  (min {min(values):.1f}, max {max(values):.1f})")


if __name__ == "__main__":
    main()
