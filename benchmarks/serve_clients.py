"""N real SDK clients against one ``tinkerplug serve``: throughput, latency and fairness.

For each N (default 1, 2, 4, 8) a fresh ``tinkerplug serve`` subprocess starts on loopback
with a keys file of N keys; N threads each run an unmodified ``tinker.ServiceClient`` with its
own key and its own LoRA, and train on the quickstart's chat data (the last assistant message
trained) as ``tinkerplug run`` does: ``forward_backward`` and ``optim_step`` submitted
together, and ``--submit-ahead`` more steps kept in flight (the pipelined executor's default,
2; 0 awaits each step before sending the next); every ``--sample-every`` steps a client waits
for its steps, takes a sampler snapshot and answers held-out prompts greedily. After
``--seconds`` of steady state, the script prints aggregate steps/s and trained tokens/s,
p50/p95 latency per request kind (submission to result), each client's share of the steps
(1.0 = a fair share), the server's peak RSS, where the CPU went (the server process's and the
benchmark process's CPU seconds per wall second: its client threads share the cores), the CPU
seconds both spent per step and the ceiling they set (the steps/s that CPU per step allows with
every core busy, over the 1-client row's steps/s: the most a row's "x 1 client" can be), how busy
the model's worker was and how many forward_backward requests ran in mixed-adapter batches
(both from ``/metrics``); the load average before and after each row. ``--real-scale`` runs
on real_scale.py's random-init model at the real vocabulary.

Each N runs twice, interleaved: with ``--no-mixed-batches`` (serialized: the worker runs one
request at a time, each key's in order) and with ``--mixed-batches`` (the head requests of the
keys queued at the same time run as one batch, each row with its own LoRA). ``--rounds R``
repeats the whole sequence R times (the machine's load drifts) and shows each row's median round.

    python benchmarks/serve_clients.py [--clients 1,2,4,8] [--seconds 20] [--submit-ahead 2] [--mixed off,on]
        [--rounds 1] [--real-scale]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from pathlib import Path

from common import machine_line, model_dir, offline_env

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "examples" / "quickstart"
ADMIN_KEY = f"tml-bench-admin-{os.urandom(8).hex()}"  # reads /metrics


def examples(tokenizer, name: str, limit: int) -> list[tuple[list[int], list[int]]]:
    """(prompt tokens, answer tokens) of the quickstart's chats, through the model's chat template."""
    rows = []
    for line in (DATA / name).read_text().splitlines()[:limit]:
        messages = json.loads(line)["messages"]
        prompt = tokenizer.encode(tokenizer.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=False),
                                  add_special_tokens=False)
        full = tokenizer.encode(tokenizer.apply_chat_template(messages, tokenize=False), add_special_tokens=False)
        rows.append((list(prompt), list(full[len(prompt):])))
    return rows


def datum(prompt: list[int], answer: list[int]):
    from tinker import types

    tokens = prompt + answer
    weights = [0.0] * (len(prompt) - 1) + [1.0] * len(answer)  # the last assistant message
    return types.Datum(model_input=types.ModelInput.from_ints(tokens[:-1]),
                       loss_fn_inputs={"target_tokens": tokens[1:], "weights": weights})


class Client(threading.Thread):
    """One SDK client: its own key, its own LoRA, the quickstart's loop."""

    def __init__(self, index: int, url: str, key: str, model: str, args: argparse.Namespace, start: threading.Barrier):
        super().__init__(daemon=True)
        self.index, self.url, self.key, self.model, self.args, self.start_line = index, url, key, model, args, start
        self.latency: dict[str, list[float]] = {"forward_backward": [], "optim_step": [], "sample": [], "snapshot": []}
        self.steps = self.tokens = 0
        self.fb_sent = 0  # forward_backward requests sent after the start line
        self.in_flight: deque = deque()  # steps sent, not yet finished, oldest first
        self.error: BaseException | None = None
        self.deadline = 0.0

    def run(self) -> None:
        try:
            self._run()
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            self.error = exc
            self.start_line.abort()

    def _run(self) -> None:
        import tinker
        from tinker import types

        service = tinker.ServiceClient(base_url=self.url, api_key=self.key)
        training = service.create_lora_training_client(self.model, rank=8, seed=self.index).result()
        tokenizer = training.get_tokenizer()
        train = examples(tokenizer, "train.jsonl", 512)
        heldout = examples(tokenizer, "heldout.jsonl", 4)
        batch = self.args.batch
        self._send(training, [datum(*r) for r in train[:batch]], types)  # warm up: not counted
        self._drain()
        self.start_line.wait()
        self.deadline = time.perf_counter() + self.args.seconds
        step = 0
        while time.perf_counter() < self.deadline:
            rows = [train[(step * batch + i + self.index * 97) % len(train)] for i in range(batch)]
            self._send(training, [datum(*r) for r in rows], types)
            while len(self.in_flight) > self.args.submit_ahead:
                self._finish(self.in_flight.popleft())
            step += 1
            if step % self.args.sample_every == 0:
                self._drain()  # as an eval does: the sampler sees every step sent before it
                self._sample(training, heldout, types)
        self._drain()

    def _send(self, training, data, types) -> None:
        """A step's forward_backward and optim_step, sent together (tinkerplug's pipelined executor)."""
        t0 = time.perf_counter()
        fb = training.forward_backward(data, "cross_entropy")
        self.fb_sent += bool(self.deadline)
        optim = training.optim_step(types.AdamParams(learning_rate=1e-3))
        self.in_flight.append((t0, fb, optim, sum(d.model_input.length for d in data)))

    def _drain(self) -> None:
        while self.in_flight:
            self._finish(self.in_flight.popleft())

    def _finish(self, sent) -> None:
        t0, fb, optim, tokens = sent
        fb.result()
        t1 = time.perf_counter()
        optim.result()
        t2 = time.perf_counter()
        if self.deadline and t2 <= self.deadline:
            self.latency["forward_backward"].append(t1 - t0)
            self.latency["optim_step"].append(t2 - t0)
            self.steps += 1
            self.tokens += tokens

    def _sample(self, training, heldout, types) -> None:
        t0 = time.perf_counter()
        sampler = training.save_weights_and_get_sampling_client().result()
        t1 = time.perf_counter()
        params = types.SamplingParams(max_tokens=8, temperature=0.0)
        futures = [sampler.sample(types.ModelInput.from_ints(prompt), 1, params) for prompt, _ in heldout]
        for future in futures:
            future.result()
        t2 = time.perf_counter()
        if t2 <= self.deadline:
            self.latency["snapshot"].append(t1 - t0)
            self.latency["sample"].append(t2 - t1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(tmp: Path, keys: list[str], extra: list[str]) -> tuple[subprocess.Popen, str]:
    import httpx

    keys_file = tmp / "keys.toml"
    keys_file.write_text("".join(f'[client{i}]\nkey = "{k}"\n' for i, k in enumerate(keys))
                         + f'[bench-admin]\nkey = "{ADMIN_KEY}"\nadmin = true\n')
    port = free_port()
    log = open(tmp / "serve.log", "w")
    server = subprocess.Popen([sys.executable, "-m", "tinkerplug.cli", "serve", "--port", str(port), "--device", "cpu",
                               "--checkpoint-dir", str(tmp / "checkpoints"), "--keys-file", str(keys_file), *extra],
                              stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "TINKERPLUG_SERVE_KEYS": ""})
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"tinkerplug serve exited: {(tmp / 'serve.log').read_text()[-2000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return server, url
        except httpx.HTTPError:
            time.sleep(0.2)
    server.kill()
    raise SystemExit("tinkerplug serve did not start")


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system) of process ``pid``, or of this one (its client threads)."""
    if pid is None:
        times = os.times()
        return times.user + times.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def server_counters(url: str) -> tuple[float, float]:
    """From /metrics: forward_backward requests run in mixed-adapter batches, and seconds the
    model's worker was busy, so far."""
    import httpx

    text = httpx.get(url + "/metrics", headers={"X-API-Key": ADMIN_KEY}, timeout=30).text

    def total(name: str) -> float:
        return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + "{"))

    return total("tinkerplug_mixed_requests_total"), total("tinkerplug_worker_busy_seconds_total")


def one_row(n: int, model: str, args: argparse.Namespace, mixed: bool) -> dict:
    with tempfile.TemporaryDirectory(prefix="serve-clients-") as tmp:
        keys = [f"tml-bench-{i}-{os.urandom(8).hex()}" for i in range(n)]
        flag = "--mixed-batches" if mixed else "--no-mixed-batches"
        server, url = start_server(Path(tmp), keys, [flag, "--base-model", model, *args.serve_arg])
        load_before = os.getloadavg()[0]
        try:
            barrier = threading.Barrier(n + 1)  # this thread too: CPU is counted from the start line
            clients = [Client(i, url, keys[i], model, args, barrier) for i in range(n)]
            for client in clients:
                client.start()
            barrier.wait()
            cpu = (cpu_seconds(server.pid), cpu_seconds(), time.perf_counter(), *server_counters(url))
            for client in clients:
                client.join(args.seconds + 600)
            errors = [c.error for c in clients if c.error is not None]
            if errors:
                raise SystemExit(f"a client failed: {type(errors[0]).__name__}: {errors[0]}")
            wall = time.perf_counter() - cpu[2]
            counters = server_counters(url)
            busy = ((cpu_seconds(server.pid) - cpu[0]) / wall, (cpu_seconds() - cpu[1]) / wall, counters[0] - cpu[3],
                    (counters[1] - cpu[4]) / wall)
            rss = peak_rss_mb(server.pid)
        finally:
            server.terminate()
            server.wait(60)
        row = summarize(n, clients, rss, load_before, os.getloadavg()[0], args.seconds)
        row.update(mixed=mixed, server_cores=busy[0], bench_cores=busy[1], mixed_share=busy[2] / max(1, row["fb_requests"]),
                   worker_busy=busy[3])
        return row


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarize(n: int, clients: list[Client], rss: float, load_before: float, load_after: float, seconds: float) -> dict:
    steps = sum(c.steps for c in clients)
    merged = {kind: [v for c in clients for v in c.latency[kind]] for kind in clients[0].latency}
    fair = steps / n if steps else float("nan")
    return {
        "clients": n, "steps_per_s": steps / seconds, "tokens_per_s": sum(c.tokens for c in clients) / seconds,
        "latency": {k: (percentile(v, 0.5), percentile(v, 0.95)) for k, v in merged.items()},
        "share_min": min(c.steps for c in clients) / fair, "share_max": max(c.steps for c in clients) / fair,
        "peak_rss_mb": rss, "load": (load_before, load_after),
        "fb_requests": sum(c.fb_sent for c in clients),
    }


def median_row(same: tuple[dict, ...]) -> dict:
    """Of one row's rounds, the one with the median steps/s (its other columns come with it)."""
    return sorted(same, key=lambda r: r["steps_per_s"])[len(same) // 2]


def cpu_per_step(row: dict) -> float:
    """CPU seconds the server and the clients (this process) spent per step, sampling included."""
    return (row["server_cores"] + row["bench_cores"]) / row["steps_per_s"]


def ceiling(row: dict) -> float:
    """The most steps/s this row's CPU per step allows with every core busy on it: a server and
    clients sharing the cores cannot go faster without cheaper steps."""
    return (os.cpu_count() or 1) / cpu_per_step(row)


def print_table(rows: list[dict]) -> None:
    ones = {r["mixed"]: r["steps_per_s"] for r in rows if r["clients"] == 1}
    print("| clients | mixed batches | steps/s | x 1 client | tokens/s | fwd_bwd p50/p95 s | optim p50/p95 s "
          "| sample p50/p95 s | share min/max | fwd_bwd merged | worker busy | CPU cores: server / bench "
          "| CPU ms per step | ceiling x 1 client | server peak RSS | load before/after |")
    print("| --- " * 16 + "|")
    for r in rows:
        lat = r["latency"]
        one = ones.get(r["mixed"], float("nan"))
        print(f"| {r['clients']} | {'on' if r['mixed'] else 'off'} | {r['steps_per_s']:.2f} | {r['steps_per_s'] / one:.2f} "
              f"| {r['tokens_per_s']:.0f} | {lat['forward_backward'][0]:.2f} / {lat['forward_backward'][1]:.2f} "
              f"| {lat['optim_step'][0]:.2f} / {lat['optim_step'][1]:.2f} | {lat['sample'][0]:.2f} / {lat['sample'][1]:.2f} "
              f"| {r['share_min']:.2f} / {r['share_max']:.2f} | {r['mixed_share']:.0%} "
              f"| {r['worker_busy']:.0%} | {r['server_cores']:.2f} / {r['bench_cores']:.2f} "
              f"| {cpu_per_step(r) * 1000:.1f} | {ceiling(r) / one:.2f} | {r['peak_rss_mb']:.0f} MB "
              f"| {r['load'][0]:.1f} / {r['load'][1]:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="1,2,4,8", help="comma-separated client counts")
    parser.add_argument("--seconds", type=float, default=20.0, help="steady-state seconds per row")
    parser.add_argument("--model", default="tiny-chat")
    parser.add_argument("--batch", type=int, default=8, help="chats per forward_backward (the quickstart's batch)")
    parser.add_argument("--sample-every", type=int, default=10, help="steps between sampler snapshots")
    parser.add_argument("--submit-ahead", type=int, default=2,
                        help="steps each client keeps in flight beyond the one it awaits, as tinkerplug's "
                             "pipelined executor does (its default: 2); 0: each step awaited before the next")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every row this many times, interleaved; each row shows its median round")
    parser.add_argument("--serve-arg", action="append", default=[], help="passed to tinkerplug serve (repeatable)")
    parser.add_argument("--mixed", default="off,on", help="off (serialized), on (mixed-adapter batches), or both: off,on")
    parser.add_argument("--real-scale", action="store_true",
                        help="a random-init Qwen3 at the real vocabulary (real_scale.py's shape: hidden 256, 4 layers, 151,936 tokens)")
    args = parser.parse_args()
    modes = [{"on": True, "off": False}[m.strip()] for m in args.mixed.split(",")]
    offline_env()
    with tempfile.TemporaryDirectory(prefix="serve-clients-model-") as tmp:
        if args.real_scale:
            from real_scale import VOCAB, build_model

            build_model(Path(tmp), 256, 4, VOCAB)
            model, args.model = tmp, "real-scale (random-init Qwen3, hidden 256, 4 layers, vocab 151,936)"
        else:
            model = model_dir(args.model) if args.model != "tiny-chat" else args.model
        print(f"# serve_clients: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; mixed-adapter batches {args.mixed}; "
              f"{args.seconds:g} s per row, batch {args.batch}, submit-ahead {args.submit_ahead}, LoRA r8, {args.model}"
              + (f"; serve {' '.join(args.serve_arg)}" if args.serve_arg else ""))
        print("# " + machine_line())
        rounds = [[one_row(int(n), model, args, mixed) for n in args.clients.split(",") for mixed in modes]
                  for _ in range(args.rounds)]
    print_table([median_row(same) for same in zip(*rounds)])
    if args.rounds > 1:
        print("# steps/s of each round: " + "; ".join(
            f"{same[0]['clients']} {'on' if same[0]['mixed'] else 'off'}: " + " ".join(f"{r['steps_per_s']:.2f}" for r in same)
            for same in zip(*rounds)))
    print(f"# CPU ms per step: the server's and the clients' CPU seconds per step (sampling included). ceiling x 1 client: "
          f"the steps/s that CPU per step allows on all {os.cpu_count()} cores, over the 1-client row's steps/s; "
          "a row cannot beat it without cheaper steps (other processes' load would lower it further)")
    print("# " + machine_line())


if __name__ == "__main__":
    main()
