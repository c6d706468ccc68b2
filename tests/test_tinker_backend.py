"""The remote backend up to its first request, its fast failures, and the stall report.

Nothing here reaches the Tinker service. Every address is a loopback one: port 9 (nothing
listens), or a small HTTP server in the test that answers like a server that is not Tinker,
rejects the key, or never answers.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from conftest import DATA, read_jsonl, run_inprocess, write_config
from tinkerplug.errors import BackendError, TinkerplugError

UNREACHABLE = "http://127.0.0.1:9"
FAKE_KEY = "tml-not-a-real-key"


def _load(tmp_path: Path, text: str = "", **overrides: object):
    from tinkerplug.cli import load_run_config

    config_path = write_config(tmp_path, text, backend="tinker", **overrides)
    return load_run_config(str(config_path), (), ())


@pytest.fixture
def tinker_env(monkeypatch):
    monkeypatch.setenv("TINKER_API_KEY", FAKE_KEY)
    monkeypatch.delenv("TINKER_BASE_URL", raising=False)
    monkeypatch.setenv("HOME", "/nonexistent")  # no stored credentials either


# -- construction ------------------------------------------------------------------------------


def test_service_client_is_the_sdks_built_lazily_on_the_configured_url(tmp_path, tinker_env):
    import tinker

    config, plugins = _load(tmp_path, f'[tinker]\nbase_url = "{UNREACHABLE}"\ncheck_connection = false\n')
    started = time.perf_counter()
    client = plugins.first("create_service_client", config=config, run_dir=str(tmp_path / "run"))
    assert time.perf_counter() - started < 2  # no request: the address has nothing behind it
    assert type(client) is tinker.ServiceClient
    assert client._base_url == UNREACHABLE and client._session_holder is None
    assert config.to_json()["tinker"]["base_url"] == UNREACHABLE
    assert FAKE_KEY not in json.dumps(config.to_json())  # the key is never part of the config


def test_base_url_comes_from_the_environment_when_the_config_has_none(tmp_path, tinker_env, monkeypatch):
    monkeypatch.setenv("TINKER_BASE_URL", "http://127.0.0.1:9/custom/")
    config, plugins = _load(tmp_path, "[tinker]\ncheck_connection = false\n")
    client = plugins.first("create_service_client", config=config, run_dir=str(tmp_path / "run"))
    assert client._base_url == "http://127.0.0.1:9/custom"  # resolved as the SDK resolves it


def test_missing_and_malformed_keys_are_refused_before_any_request(tmp_path, tinker_env, monkeypatch):
    config, plugins = _load(tmp_path, f'[tinker]\nbase_url = "{UNREACHABLE}"\n')
    monkeypatch.delenv("TINKER_API_KEY")
    with pytest.raises(TinkerplugError, match="TINKER_API_KEY is not set") as missing:
        plugins.first("create_service_client", config=config, run_dir=str(tmp_path / "run"))
    assert "tinker auth login" in missing.value.hint
    monkeypatch.setenv("TINKER_API_KEY", "sk-something-else")
    with pytest.raises(TinkerplugError, match="does not look like a Tinker key"):
        plugins.first("create_service_client", config=config, run_dir=str(tmp_path / "run"))


def test_datums_are_the_sdk_types_and_encode_into_its_request(tmp_path, service):
    """The same datums feed both backends: the SDK encodes them into its forward_backward
    request (its own proto code), and the local backend trains on them."""
    from tinker import types
    from tinker.proto import tinker_public_pb2 as pb
    from tinker.proto.request_conv import forward_backward_request_to_proto
    from transformers import AutoTokenizer

    from tinkerplug.cli import load_run_config
    from tinkerplug.models import shipped_model_dir
    from tinkerplug.training_data import render_training_data

    config, plugins = load_run_config(str(write_config(tmp_path)), (), ())
    tokenizer = AutoTokenizer.from_pretrained(shipped_model_dir("tiny-chat"))
    renderer = plugins.resolve_renderer(config, tokenizer)
    records = read_jsonl(DATA / "fast_train.jsonl")[:8]
    training_data = render_training_data(records, renderer, config, plugins)
    data = [datum for step in range(training_data.steps_per_epoch) for datum in training_data.batch(step)]
    assert training_data.stats.kept == 8 and all(type(d) is types.Datum for d in data)

    request = types.ForwardBackwardRequest(
        forward_backward_input=types.ForwardBackwardInput(data=data, loss_fn="cross_entropy"),
        model_id="model",
        seq_id=1,
    )
    wire = pb.ForwardBackwardRequest()
    wire.ParseFromString(forward_backward_request_to_proto(request).SerializeToString())
    assert wire.loss_fn == "cross_entropy" and len(wire.data) == 8
    for datum, sent in zip(data, wire.data):
        tokens = np.concatenate([np.frombuffer(c.encoded_text.tokens, "<i4") for c in sent.model_input])
        assert tokens.tolist() == datum.model_input.to_ints()
        for name, dtype in (("target_tokens", "<i8"), ("weights", "<f4")):
            tensor = sent.loss_fn_inputs[name]
            assert pb.DType.Name(tensor.dtype) == {"<i8": "DTYPE_INT64", "<f4": "DTYPE_FLOAT32"}[dtype]
            np.testing.assert_array_equal(np.frombuffer(tensor.dense, dtype), datum.loss_fn_inputs[name].to_numpy())
        assert abs(float(np.frombuffer(sent.loss_fn_inputs["weights"].dense, "<f4").sum()) - 1) < 1e-5

    client = service.create_lora_training_client("tiny-chat", rank=4, seed=0).result()
    out = client.forward(data, "cross_entropy").result()
    assert [len(o["logprobs"].to_numpy()) for o in out.loss_fn_outputs] == [d.model_input.length for d in data]


# -- failing fast ------------------------------------------------------------------------------


def test_unreachable_base_url_fails_in_seconds(tinker_env):
    import tinker  # noqa: F401 - imported before the clock starts

    from tinkerplug_tinker.connect import check_service

    started = time.perf_counter()
    with pytest.raises(BackendError, match=r"cannot reach Tinker at http://127\.0\.0\.1:9") as error:
        check_service(UNREACHABLE, FAKE_KEY, timeout_s=5)
    assert time.perf_counter() - started < 3, "the SDK alone retries for 5 minutes"
    assert "base_url" in error.value.hint


def test_run_against_an_unreachable_service_stops_at_once_with_a_clear_error(tmp_path):
    config = write_config(tmp_path, f'[tinker]\nbase_url = "{UNREACHABLE}"\n', backend="tinker")
    started = time.perf_counter()
    result = run_inprocess("run", str(config), env={"TINKER_API_KEY": FAKE_KEY}, timeout=120)
    elapsed = time.perf_counter() - started
    assert result.returncode != 0
    assert "cannot reach Tinker at http://127.0.0.1:9" in result.stderr
    assert "Traceback" not in result.stderr and FAKE_KEY not in result.stderr
    assert elapsed < 60, elapsed  # imports included; the check itself is instant


class _Server:
    """A loopback HTTP server answering every request with ``respond(path) -> (status, body)``."""

    def __init__(self, respond):
        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                status, body = respond(self.path, self.headers)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __enter__(self) -> "_Server":
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_a_rejected_key_is_named_as_such(tinker_env):
    from tinkerplug_tinker.connect import check_service

    with _Server(lambda path, headers: (401, {"detail": "Invalid API key"})) as server:
        with pytest.raises(BackendError, match=r"rejected the API key \(HTTP 401: Invalid API key\)"):
            check_service(server.url, FAKE_KEY, timeout_s=5)


def test_a_server_that_is_not_tinker_and_an_unserved_model(tinker_env):
    from tinkerplug_tinker.connect import check_base_model, check_service

    seen: list[tuple[str, str | None]] = []

    def respond(path, headers):
        seen.append((path, headers.get("X-API-Key")))
        if path.endswith("/client/config"):
            return 200, {"pjwt_auth_enabled": False}
        if path.endswith("/get_server_capabilities"):
            return 200, {"supported_models": [{"model_name": "Qwen/Qwen3-8B"}]}
        return 404, {"detail": "Not Found"}

    with _Server(respond) as server:
        check = check_service(server.url, FAKE_KEY, timeout_s=5)
        assert check.supported_models == ["Qwen/Qwen3-8B"]
        check_base_model("Qwen/Qwen3-8B", check)
        with pytest.raises(BackendError, match="does not serve base_model 'tiny-chat'") as error:
            check_base_model("tiny-chat", check)
        assert "Qwen/Qwen3-8B" in error.value.hint
        assert [p for p, _ in seen] == ["/api/v1/client/config", "/api/v1/get_server_capabilities"]
        assert all(key == FAKE_KEY for _, key in seen)  # sent as the SDK sends it, nowhere else
    with _Server(lambda path, headers: (404, {"detail": "Not Found"})) as other:
        with pytest.raises(BackendError, match=r"answered the client-config request with HTTP 404"):
            check_service(other.url, FAKE_KEY, timeout_s=5)


def test_a_server_with_session_tokens_gets_the_key_exchanged_first(tinker_env):
    import base64

    from tinkerplug_tinker.connect import check_service

    claims = base64.urlsafe_b64encode(json.dumps({"exp": time.time() + 3600}).encode()).decode().rstrip("=")
    token = f"eyJhbGciOiJub25lIn0.{claims}.sig"
    seen: list[tuple[str, str | None]] = []

    def respond(path, headers):
        seen.append((path, headers.get("X-API-Key")))
        if path.endswith("/client/config"):
            return 200, {"pjwt_auth_enabled": True}
        if path.endswith("/auth/token"):
            return 200, {"jwt": token}
        if path.endswith("/get_server_capabilities"):
            if headers.get("X-API-Key") != token:
                return 401, {"detail": "expected the session token"}
            return 200, {"supported_models": [{"model_name": "Qwen/Qwen3-8B"}]}
        return 404, {"detail": "Not Found"}

    with _Server(respond) as server:
        assert check_service(server.url, FAKE_KEY, timeout_s=5).supported_models == ["Qwen/Qwen3-8B"]
    assert seen == [
        ("/api/v1/client/config", FAKE_KEY),
        ("/api/v1/auth/token", FAKE_KEY),
        ("/api/v1/get_server_capabilities", token),
    ]


def test_a_service_that_never_answers_times_out(tinker_env):
    from tinkerplug_tinker.connect import check_service

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)  # connections complete in the kernel; nobody ever reads or answers
    try:
        started = time.perf_counter()
        with pytest.raises(BackendError, match="did not answer"):
            check_service(f"http://127.0.0.1:{listener.getsockname()[1]}", FAKE_KEY, timeout_s=1)
        assert time.perf_counter() - started < 6
    finally:
        listener.close()


# -- stalls ------------------------------------------------------------------------------------

SLOW_EXECUTOR = '''
"""Wraps the real step executor; step 2 waits 3 s before it is submitted."""
import asyncio
import tinkerplug


class Slow:
    def __init__(self, inner):
        self.inner = inner

    async def submit(self, step, data, adam_params):
        if step == 2:
            await asyncio.sleep(3)
        return await self.inner.submit(step, data, adam_params)

    async def drain(self):
        return await self.inner.drain()


@tinkerplug.hookimpl(wrapper=True)
def make_step_executor(config, training_client):
    return Slow((yield))
'''


def test_a_stall_is_reported_with_the_resume_command(tmp_path):
    (tmp_path / "slow.py").write_text(SLOW_EXECUTOR)
    config = write_config(
        tmp_path, num_steps=4, save_every=2, executor="sync", stall_minutes=0.02, plugins=["slow.py"]
    )
    result = run_inprocess("run", str(config))
    assert result.returncode == 0, result.stderr
    text = " ".join(result.stderr.split())  # rich wraps long lines
    assert "no training step finished for" in text
    assert "the last step that finished was step 1" in text
    assert "resume from the last checkpoint (step 2)" in text
    assert "--resume" in text and str(tmp_path / "run") in text
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["step"] for r in rows if "train/loss" in r] == [0, 1, 2, 3]  # the run went on


def test_the_watchdog_reports_once_per_stall_and_rearms_when_a_step_finishes():
    from tinkerplug.watchdog import StallWatchdog

    last = [time.perf_counter()]
    messages: list[str] = []
    with StallWatchdog(0.005, lambda: last[0], lambda idle: f"idle {idle:.2f}", messages.append):  # 0.3 s
        time.sleep(1.0)
        assert len(messages) == 1  # once per stall, not at every poll
        last[0] = time.perf_counter()  # a step finished
        time.sleep(0.1)
        assert len(messages) == 1
        time.sleep(1.0)
    assert len(messages) == 2
    assert float(messages[0].split()[1]) >= 0.3
