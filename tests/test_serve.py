"""``tinkerplug serve``: the local backend over the Tinker HTTP API, reached by the real SDK.

Every server here is a real ``tinkerplug serve`` process on a free loopback port; every client
is the unmodified ``tinker`` SDK (or raw HTTP, for what the SDK never sends). Results are
compared with the local backend in this process: over HTTP they must be the same numbers.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from conftest import run_inprocess

MODEL = "tiny-chat"
KEY = "tml-serve-test-key"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A ``tinkerplug serve`` subprocess; ``url`` once it answers ``/healthz``."""

    def __init__(self, checkpoint_dir: Path, *args: str, port: int | None = None):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = checkpoint_dir.parent / f"serve-{self.port}.log"
        command = [sys.executable, "-m", "tinkerplug.cli", "serve", "--port", str(self.port),
                   "--checkpoint-dir", str(checkpoint_dir), "--device", "cpu", *args]
        self._log_file = open(self.log, "w")
        self.process = subprocess.Popen(command, stdout=self._log_file, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self._log_file.close()
                raise AssertionError(self.log.read_text())
            try:
                httpx.get(self.url + "/api/v1/healthz", timeout=1)  # any answer (401 too): it is up
                return
            except httpx.HTTPError:
                time.sleep(0.2)
        self.stop(signal.SIGKILL)
        raise AssertionError("tinkerplug serve did not start")

    def healthy(self) -> bool:
        return self.process.poll() is None and httpx.get(self.url + "/api/v1/healthz", timeout=5).status_code == 200

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log_file.close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("serve")
    started = Server(root / "checkpoints", "--max-body-mb", "2")
    yield started
    started.stop()
    assert KEY not in started.log.read_text()


def sdk(server: Server):
    import tinker

    return tinker.ServiceClient(base_url=server.url, api_key=KEY)


def datum(tokens: list[int]):
    from tinker import types

    return types.Datum(
        model_input=types.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={"target_tokens": tokens[1:], "weights": [1.0] * (len(tokens) - 1)},
    )


BATCHES = [[datum([5 + i, 17, 23 + i, 42, 9, 11 + i, 30, 7]) for i in range(3)], [datum([8, 9, 10, 11, 12 + j]) for j in range(2)]]


def train(client, steps: int, offset: int = 0) -> list[float]:
    """``steps`` pipelined steps (every request submitted before any result is awaited)."""
    from tinker import types

    futures = []
    for step in range(steps):
        futures.append(client.forward_backward(BATCHES[(step + offset) % 2], "cross_entropy"))
        client.optim_step(types.AdamParams(learning_rate=1e-2))
    return [f.result().metrics["loss:sum"] for f in futures]


# -- the SDK against the server ---------------------------------------------------------------


@pytest.mark.slow  # a `tinkerplug serve` process
def test_training_sampling_and_checkpoints_match_the_local_backend(server, service):
    from tinker import types

    remote = sdk(server).create_lora_training_client(MODEL, rank=4, seed=3)
    local = service.create_lora_training_client(MODEL, rank=4, seed=3).result()
    remote = remote.result()
    assert train(remote, 3) == train(local, 3)  # bit-identical: the same computation

    state = remote.save_state("step3").result().path
    sampler_path = remote.save_weights_for_sampler("step3").result().path
    assert state == f"tinker://{remote.model_id}/weights/step3"
    assert sampler_path == f"tinker://{remote.model_id}/sampler_weights/step3"
    prompt = types.ModelInput.from_ints([5, 17, 23, 42, 9])
    sampler = sdk(server).create_sampling_client(model_path=sampler_path).result()
    expected = service.create_sampling_client(model_path=local.save_weights_for_sampler("s3").result().path).result()
    want = expected.compute_logprobs(prompt).result()
    assert sampler.compute_logprobs(prompt).result() == pytest.approx(want, abs=1e-6)
    response = sampler.sample(prompt, 2, types.SamplingParams(max_tokens=4, seed=11), include_prompt_logprobs=True).result()
    assert len(response.sequences) == 2 and all(1 <= len(s.tokens) <= 4 for s in response.sequences)
    assert all(len(s.logprobs) == len(s.tokens) and s.sequence_id for s in response.sequences)
    assert response.prompt_logprobs == pytest.approx(want, abs=1e-6)
    snapshot = remote.save_weights_and_get_sampling_client().result()
    assert snapshot.compute_logprobs(prompt).result() == pytest.approx(want, abs=1e-6)

    info = remote.get_info()
    assert info.model_id == remote.model_id and info.lora_rank == 4
    assert Path(remote.get_tokenizer().name_or_path).is_dir()  # the model's own files, no hub

    resumed = sdk(server).create_training_client_from_state_with_optimizer(state).result()
    assert train(resumed, 2, offset=1) == train(local, 2, offset=1)  # weights and Adam restored


@pytest.mark.slow  # a `tinkerplug serve` process
def test_unsupported_loss_reaches_the_client_as_a_failed_request(server):
    client = sdk(server).create_lora_training_client(MODEL, rank=4, seed=0).result()
    with pytest.raises(Exception, match="no_such_loss"):
        client.forward_backward(BATCHES[0], "no_such_loss").result(timeout=60)


@pytest.mark.slow  # a `tinkerplug serve` process
def test_two_clients_train_at_once_on_one_base_model(server, service):
    """Each client's results are what it gets alone: its own LoRA and optimizer."""
    alone = []
    for seed, offset in ((1, 0), (2, 1)):
        alone.append(train(service.create_lora_training_client(MODEL, rank=4, seed=seed).result(), 6, offset))
    together: dict[int, list[float]] = {}

    def one(index: int, seed: int, offset: int) -> None:
        together[index] = train(sdk(server).create_lora_training_client(MODEL, rank=4, seed=seed).result(), 6, offset)

    threads = [threading.Thread(target=one, args=(i, seed, offset)) for i, (seed, offset) in enumerate(((1, 0), (2, 1)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert [together[0], together[1]] == alone


@pytest.mark.slow  # a `tinkerplug serve` process
def test_rest_calls_list_get_delete_and_download(server, tmp_path):
    import tinker

    client = sdk(server).create_lora_training_client(MODEL, rank=4, seed=0, user_metadata={"renderer_name": "qwen3"}).result()
    train(client, 1)
    state = client.save_state("a").result().path
    client.save_weights_for_sampler("a").result()
    exported = client.save_weights_external("export").result().path
    rest = tinker.RestClient(base_url=server.url, api_key=KEY)
    run = rest.get_training_run_by_tinker_path(state).result()
    assert (run.training_run_id, run.base_model, run.lora_rank) == (client.model_id, MODEL, 4)
    assert run.user_metadata == {"renderer_name": "qwen3"}
    listed = {c.checkpoint_id: c.checkpoint_type for c in rest.list_checkpoints(client.model_id).result().checkpoints}
    assert listed == {"weights/a": "training", "sampler_weights/a": "sampler", "external_weights/export": "external"}
    assert client.model_id in [r.training_run_id for r in rest.list_training_runs(limit=100).result().training_runs]

    urls = rest.get_external_weights_urls(exported).result().urls
    assert set(urls) == {"adapter_config.json", "adapter_model.safetensors"}
    config = httpx.get(urls["adapter_config.json"])  # no API key: the URL is signed
    assert config.status_code == 200 and json.loads(config.content)["r"] == 4
    assert httpx.get(urls["adapter_config.json"].replace("signature=", "signature=0")).status_code == 404

    rest.delete_checkpoint_from_tinker_path(state).result()
    listed = [c.checkpoint_id for c in rest.list_checkpoints(client.model_id).result().checkpoints]
    assert "weights/a" not in listed and "sampler_weights/a" in listed
    with pytest.raises(Exception):
        sdk(server).create_training_client_from_state(state).result(timeout=60)


# -- bad input, hostile paths, dying clients ---------------------------------------------------


@pytest.mark.slow  # a `tinkerplug serve` process
def test_bad_bodies_get_4xx_and_the_server_goes_on(server):
    headers = {"X-API-Key": KEY}
    api = server.url + "/api/v1"
    answers = {
        "not json": httpx.post(api + "/optim_step", content=b"{oops", headers=headers),
        "wrong fields": httpx.post(api + "/optim_step", json={"model_id": 3}, headers=headers),
        "not protobuf": httpx.post(api + "/forward_backward", content=b"\xff\x00garbage", headers={**headers, "Content-Type": "application/x-protobuf"}),
        "unknown model": httpx.post(api + "/get_info", json={"model_id": "nobody:train:0"}, headers=headers),
        "unknown future": httpx.post(api + "/retrieve_future", json={"request_id": "nope"}, headers=headers),
        "too large": httpx.post(api + "/optim_step", content=b"x" * (3 * 1024 * 1024), headers=headers),
        "not served": httpx.get(api + "/audit", headers=headers),
    }
    statuses = {name: r.status_code for name, r in answers.items()}
    assert statuses == {
        "not json": 400, "wrong fields": 400, "not protobuf": 400, "unknown model": 404,
        "unknown future": 404, "too large": 413, "not served": 404,
    }
    assert "GET /api/v1/audit: not served by tinkerplug serve: " in answers["not served"].json()["detail"]
    assert "OptimStepRequest" in answers["wrong fields"].json()["detail"]
    assert all(r.headers["x-should-retry"] == "false" for r in answers.values())
    assert server.healthy()


@pytest.mark.slow  # a `tinkerplug serve` process
def test_no_request_path_leaves_the_checkpoint_dir(server, tmp_path):
    outside = tmp_path / "outside" / "weights" / "x"
    outside.mkdir(parents=True)
    root = server.log.parent / "checkpoints"
    (root / "linked").symlink_to(tmp_path / "outside", target_is_directory=True)
    headers = {"X-API-Key": KEY}
    api = server.url + "/api/v1"
    for path in ("tinker://../weights/x", "tinker://linked/weights/x", "tinker://run/weights/..", "/etc",
                 f"tinker://{outside.parent.parent}/weights/x", "tinker://run/weights/a/../../b", "local:///etc"):
        for endpoint, body in (
            ("/load_weights", {"path": path, "optimizer": False, "session_id": "s", "model_seq_id": 0}),
            ("/create_sampling_session", {"session_id": "s", "sampling_session_seq_id": 0, "model_path": path}),
            ("/weights_info", {"tinker_path": path}),
        ):
            answer = httpx.post(api + endpoint, json=body, headers=headers)
            assert 400 <= answer.status_code < 500, (endpoint, path, answer.text)
    for url in ("/training_runs/linked/checkpoints/weights/x", "/training_runs/..%2F..%2Fetc/checkpoints/weights/x"):
        assert 400 <= httpx.delete(api + url, headers=headers).status_code < 500
    assert outside.is_dir()  # nothing deleted outside
    assert server.healthy()


@pytest.mark.slow  # a `tinkerplug serve` process
def test_a_client_killed_mid_request_leaves_the_server_healthy(server, tmp_path):
    # A body cut off half way, then a real SDK client SIGKILLed while its results are pending.
    with socket.create_connection(("127.0.0.1", server.port)) as raw:
        raw.sendall(b"POST /api/v1/optim_step HTTP/1.1\r\nHost: x\r\nX-API-Key: " + KEY.encode()
                    + b"\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{\"model_id\"")
    script = tmp_path / "dies.py"
    script.write_text(
        "import os, signal, sys, tinker\n"
        "sys.path.insert(0, sys.argv[2])\n"
        "from test_serve import BATCHES\n"
        f"c = tinker.ServiceClient(base_url=sys.argv[1], api_key={KEY!r}).create_lora_training_client({MODEL!r}, rank=4).result()\n"
        "futures = [c.forward_backward(BATCHES[0], 'cross_entropy') for _ in range(20)]\n"
        "print('submitted', flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, str(script), server.url, str(Path(__file__).parent)], capture_output=True, text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL and "submitted" in done.stdout, done.stderr[-2000:]
    assert server.healthy()
    client = sdk(server).create_lora_training_client(MODEL, rank=4, seed=0).result()
    assert len(train(client, 1)) == 1


# -- keys and binding --------------------------------------------------------------------------


@pytest.mark.slow  # a `tinkerplug serve` process
def test_keys_are_required_when_set_and_never_shown(tmp_path):
    from tinkerplug.errors import BackendError
    from tinkerplug_tinker.connect import check_service

    keyed = Server(tmp_path / "checkpoints", "--api-key", "tml-the-right-one", port=None)
    try:
        with pytest.raises(BackendError, match=r"rejected the API key \(HTTP 401"):
            check_service(keyed.url, "tml-a-wrong-one", timeout_s=10)
        assert check_service(keyed.url, "tml-the-right-one", timeout_s=10).supported_models
        assert httpx.get(keyed.url + "/api/v1/training_runs").status_code == 401  # no key at all
    finally:
        keyed.stop()
    assert "tml-the-right-one" not in keyed.log.read_text() and "tml-a-wrong-one" not in keyed.log.read_text()


def test_a_non_loopback_bind_needs_a_key(tmp_path):
    refused = run_inprocess("serve", "--host", "0.0.0.0", "--checkpoint-dir", str(tmp_path), env={"TINKERPLUG_SERVE_KEYS": ""})
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert "refusing to serve on 0.0.0.0" in refused.stderr and "--api-key" in refused.stderr
    bad_key = run_inprocess("serve", "--api-key", "not-a-tinker-key", "--checkpoint-dir", str(tmp_path))
    assert bad_key.returncode != 0 and "must start with 'tml-'" in bad_key.stderr
    assert "not-a-tinker-key" not in bad_key.stderr
    assert not list(tmp_path.iterdir())  # refused before anything was written


def test_serve_help_imports_nothing_heavy():
    probe = ("import sys; from tinkerplug.cli import main\n"
             "try:\n    main(['serve', '--help'])\nexcept SystemExit:\n    pass\n"
             "print(sorted(m for m in ('uvicorn', 'starlette', 'fastapi', 'torch', 'tinker') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip().splitlines()[-1] == "[]", result.stdout + result.stderr


# -- the clock ---------------------------------------------------------------------------------


@pytest.mark.slow  # a `tinkerplug serve` process
def test_clocked_mode_releases_results_at_cycle_ends(tmp_path):
    """With ``--clock-ms`` a loop that awaits each request pays cycles a step; one that keeps
    the next step queued gets one step a cycle (benchmarks/pipelining.py --http measures it)."""
    from tinker import types

    cycle = 0.25
    clocked = Server(tmp_path / "checkpoints", "--clock-ms", str(cycle * 1000))
    try:
        client = sdk(clocked).create_lora_training_client(MODEL, rank=4, seed=0).result()
        started = time.perf_counter()
        for _ in range(2):  # synchronous: each request waits for the next cycle, then its end
            client.forward_backward(BATCHES[0], "cross_entropy").result()
            client.optim_step(types.AdamParams(learning_rate=1e-3)).result()
        sync_per_step = (time.perf_counter() - started) / 2
        started = time.perf_counter()
        assert len(train(client, 6)) == 6
        pipelined_per_step = (time.perf_counter() - started) / 6
    finally:
        clocked.stop()
    assert sync_per_step >= 3.5 * cycle, sync_per_step  # 4 cycles a step (never released early)
    assert pipelined_per_step < 0.5 * sync_per_step, (pipelined_per_step, sync_per_step)
