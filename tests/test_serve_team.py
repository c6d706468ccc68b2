"""``tinkerplug serve`` for a team: owners and the isolation matrix, keys files, limits, health.

The server runs in this process (uvicorn on a thread, a real loopback port); clients are the
unmodified ``tinker`` SDK and raw HTTP for what the SDK never sends.
"""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

import httpx
import pytest

MODEL = "tiny-chat"
SESSION = {"tags": [], "user_metadata": None, "sdk_version": "0.38.0"}
ALICE, BOB, ROOT = "tml-alice-key-0001", "tml-bob-key-0002", "tml-root-key-0003"


class TeamServer:
    """``tinkerplug serve``'s app on a thread of this process, with a keyring, and raw HTTP."""

    def __init__(self, root: Path, keys, **state_options):
        from tinkerplug_local.server.thread import ThreadServer

        self.thread = ThreadServer(root, keys, **state_options)
        self.state, self.app, self.url = self.thread.state, self.thread.app, self.thread.url

    def sdk(self, key: str):
        import tinker

        return tinker.ServiceClient(base_url=self.url, api_key=key)

    def call(self, method: str, path: str, key: str | None, **kwargs) -> httpx.Response:
        headers = {"X-API-Key": key} if key else {}
        return httpx.request(method, self.url + path, headers=headers, timeout=60, **kwargs)

    def stop(self) -> None:
        self.thread.stop()


def keyring(tmp_path: Path, **limits):
    from tinkerplug_local.server.principals import Limits, load_keyring

    keys = tmp_path / "keys.toml"
    keys.write_text(f'[alice]\nkey = "{ALICE}"\n[bob]\nkey = "{BOB}"\n[root]\nkey = "{ROOT}"\nadmin = true\n')
    return load_keyring((), "", str(keys), Limits(**limits), "TINKERPLUG_SERVE_KEYS")


def datum(tokens: list[int]):
    from tinker import types

    return types.Datum(
        model_input=types.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={"target_tokens": tokens[1:], "weights": [1.0] * (len(tokens) - 1)},
    )


@pytest.fixture(scope="module")
def team(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("team")
    server = TeamServer(root / "checkpoints", keyring(root))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def alice(team):
    """What alice made: a model with a future, checkpoints of each kind, samplers."""
    from tinker import types

    client = team.sdk(ALICE).create_lora_training_client(MODEL, rank=4, seed=0).result()
    client.forward_backward([datum([5, 17, 23, 42, 9])], "cross_entropy").result()
    state = client.save_state("s1").result().path
    sampler_path = client.save_weights_for_sampler("w1").result().path
    model_id = client.model_id
    session = model_id.split(":")[0]
    sampling = team.call("POST", "/api/v1/create_sampling_session", ALICE,
                         json={"session_id": session, "sampling_session_seq_id": 5, "model_path": sampler_path})
    assert sampling.status_code == 200, sampling.text
    future = team.call("POST", "/api/v1/optim_step", ALICE, json={"model_id": model_id, "adam_params": {"learning_rate": 0.0}})
    external = team.call("POST", "/api/v1/save_weights_external", ALICE, json={"model_id": model_id, "path": "x1"})
    assert future.status_code == 200 and external.status_code == 200, (future.text, external.text)
    done = team.call("POST", "/api/v1/retrieve_future", ALICE, json={"request_id": external.json()["request_id"]})
    assert done.status_code == 200, done.text
    urls = team.call("GET", f"/api/v1/training_runs/{model_id}/checkpoints/external_weights/x1/external_weights_urls", ALICE)
    assert urls.status_code == 200, urls.text
    return {
        "model": model_id, "session": session, "state": state, "sampler_path": sampler_path,
        "sampling_session": sampling.json()["sampling_session_id"], "request": future.json()["request_id"],
        "download": urls.json()["urls"]["adapter_config.json"], "types": types,
    }


def _fb_body(model_id: str) -> bytes:
    from tinker.proto import tinker_public_pb2 as pb

    message = pb.ForwardBackwardRequest(model_id=model_id, seq_id=1, loss_fn="cross_entropy")
    message.data.add().model_input.add().encoded_text.tokens = b"\x05\x00\x00\x00\x11\x00\x00\x00"
    return message.SerializeToString()


# Every route of the app, as another key (bob) would aim it at alice's things. A route the app
# has and this table lacks fails the test: a new route must say how it keeps owners apart.
def _requests(a: dict) -> dict[tuple[str, str], dict]:
    run, ckpt = a["model"], "/api/v1/training_runs/{run}/checkpoints/{kind}/{name}"
    proto = {"content": _fb_body(run), "headers": {"Content-Type": "application/x-protobuf"}}
    return {
        ("POST", "/api/v1/session_heartbeat"): {"json": {"session_id": a["session"]}},
        ("POST", "/api/v1/sessions/{session_id}/finish"): {"path": f"/api/v1/sessions/{a['session']}/finish"},
        ("POST", "/api/v1/retrieve_future"): {"json": {"request_id": a["request"]}},
        ("POST", "/api/v1/create_model"): {"json": {"session_id": a["session"], "model_seq_id": 7, "base_model": MODEL}},
        ("POST", "/api/v1/get_info"): {"json": {"model_id": run}},
        ("POST", "/api/v1/forward_backward"): proto,
        ("POST", "/api/v1/optim_step"): {"json": {"model_id": run, "adam_params": {"learning_rate": 1.0}}},
        ("POST", "/api/v1/save_weights"): {"json": {"model_id": run, "path": "stolen"}},
        ("POST", "/api/v1/save_weights_for_sampler"): {"json": {"model_id": run, "path": "stolen"}},
        ("POST", "/api/v1/save_weights_external"): {"json": {"model_id": run, "path": "stolen"}},
        ("POST", "/api/v1/load_weights"): {"json": {"path": a["state"], "optimizer": True, "session_id": "x", "model_seq_id": 0}},
        ("POST", "/api/v1/create_sampling_session"): {"json": {"session_id": a["session"], "sampling_session_seq_id": 9, "base_model": MODEL}},
        ("POST", "/api/v1/asample"): {"json": {"sampling_session_id": a["sampling_session"], "num_samples": 1,
                                              "prompt": {"chunks": [{"type": "encoded_text", "tokens": [5, 17]}]},
                                              "sampling_params": {"max_tokens": 2}}},
        ("GET", "/api/v1/samplers/{sampler_id:path}"): {"path": f"/api/v1/samplers/{a['sampling_session']}"},
        ("GET", "/api/v1/training_runs/{run}"): {"path": f"/api/v1/training_runs/{run}"},
        ("GET", "/api/v1/training_runs/{run}/checkpoints"): {"path": f"/api/v1/training_runs/{run}/checkpoints"},
        ("DELETE", ckpt): {"path": f"/api/v1/training_runs/{run}/checkpoints/weights/s1"},
        ("GET", ckpt + "/external_weights_urls"): {"path": f"/api/v1/training_runs/{run}/checkpoints/external_weights/x1/external_weights_urls"},
        ("POST", "/api/v1/weights_info"): {"json": {"tinker_path": a["state"]}},
        ("GET", "/api/v1/files/{run}/{kind}/{name}/{file}"): {"url": a["download"].replace("signature=", "signature=f")},
        ("GET", "/metrics"): {"path": "/metrics"},  # admin keys only (checked below)
        ("POST", "/api/v1/cancel_future"): {"json": {"request_id": a["request"]}},
        ("POST", "/api/v1/create_custom_loss"): {"json": {"session_id": a["session"], "custom_loss_seq_id": 0, "name": "x",
                                                          "inputs": [{"name": "logprobs", "rank": 1}], "graph": {"nodes": []}}},
        ("PUT", ckpt + "/ttl"): {"path": f"/api/v1/training_runs/{run}/checkpoints/weights/s1/ttl", "json": {"ttl_seconds": 5}},
        ("POST", ckpt + "/publish"): {"path": f"/api/v1/training_runs/{run}/checkpoints/weights/s1/publish"},
        ("DELETE", ckpt + "/publish"): {"path": f"/api/v1/training_runs/{run}/checkpoints/weights/s1/publish"},
        ("DELETE", "/api/v1/training_runs/{run}/checkpoints/{name}"): {"path": f"/api/v1/training_runs/{run}/checkpoints/s1"},
        ("POST", "/api/v1/copy_weights"): {"json": {"source_path": a["state"]}},
        ("GET", "/api/v1/sessions/{session_id}"): {"path": f"/api/v1/sessions/{a['session']}"},
        ("POST", "/oai/api/v1/chat/completions"): {"json": {"model": a["sampler_path"], "max_tokens": 2,
                                                           "messages": [{"role": "user", "content": "hi"}]}},
        ("POST", "/oai/api/v1/completions"): {"json": {"model": f"{MODEL};{a['sampler_path']}", "prompt": "hi", "max_tokens": 2}},
        ("GET", "/oai/api/v1/models/{model:path}"): {"path": f"/oai/api/v1/models/{a['sampler_path']}"},
    }


# Routes that show nothing of any key's: what they answer is the same for every key.
PUBLIC = {
    ("POST", "/api/v1/client/config"), ("POST", "/api/v1/client/dynamic_config"), ("POST", "/api/v1/create_session"),
    ("GET", "/api/v1/get_server_capabilities"), ("POST", "/api/v1/get_server_capabilities"),
    ("GET", "/api/v1/healthz"), ("POST", "/api/v1/telemetry"), ("GET", "/healthz"),
}
# Routes that list: another key's things are left out (checked below), not refused.
LISTS = {("GET", "/api/v1/training_runs"): {}, ("GET", "/api/v1/checkpoints"): {}, ("GET", "/oai/api/v1/models"): {},
         ("GET", "/api/v1/sessions"): {}, ("POST", "/api/v1/sessions/search"): {"json": {}},
         ("GET", "/api/v1/billing/usage/checkpoints/current"): {}}
CATCH_ALL = "/{path:path}"


def app_routes(team) -> list[tuple[str, str]]:
    """(method, path template) of every route the app serves."""
    routes = []
    for route in team.app.app.routes:
        for method in sorted(getattr(route, "methods", None) or ["GET"]):
            if method != "HEAD" and route.path != CATCH_ALL:
                routes.append((method, route.path))
    return routes


def test_every_route_has_an_owner_rule(team):
    """The matrix covers the app's route table: a new route without a rule fails here."""
    matrix = set(_requests({k: "x" for k in ("model", "session", "state", "request", "sampling_session", "download", "sampler_path")}))
    missing = [r for r in app_routes(team) if r not in matrix | PUBLIC | set(LISTS)]
    assert not missing, f"routes with no owner rule in the isolation matrix: {missing}"
    stale = (matrix | set(LISTS)) - set(app_routes(team))  # a 404 from the catch-all would prove nothing
    assert not stale, f"isolation matrix rows for routes the app does not serve: {stale}"


def _bob_asks(team, alice, method: str, template: str, key: str = BOB) -> httpx.Response:
    spec = dict(_requests(alice)[(method, template)])
    url = spec.pop("url", None) or team.url + spec.pop("path", template)
    headers = {"X-API-Key": key, **spec.pop("headers", {})}
    return httpx.request(method, url, headers=headers, timeout=60, **spec)


MATRIX = sorted(_requests({k: "x" for k in ("model", "session", "state", "request", "sampling_session", "download", "sampler_path")}))


@pytest.mark.parametrize("method,template", MATRIX, ids=[f"{m} {t}" for m, t in MATRIX])
def test_another_key_gets_404_on_every_route(team, alice, method, template):
    answer = _bob_asks(team, alice, method, template)
    assert answer.status_code == 404, (method, template, answer.status_code, answer.text)
    assert "alice" not in answer.text  # the owner is never named to another key


SAFE = [r for r in MATRIX if r[0] == "GET" and "files" not in r[1] and r[1] != "/metrics"] + [
    ("POST", p) for p in ("/api/v1/get_info", "/api/v1/weights_info", "/api/v1/retrieve_future", "/api/v1/session_heartbeat",
                          "/api/v1/asample", "/oai/api/v1/chat/completions", "/oai/api/v1/completions")]


@pytest.mark.parametrize("method,template", SAFE, ids=[f"{m} {t}" for m, t in SAFE])
def test_the_matrix_requests_work_for_their_owner(team, alice, method, template):
    """The control: bob's 404s come from the owner check, not from a malformed request."""
    answer = _bob_asks(team, alice, method, template, key=ALICE)
    assert answer.status_code == 200, (method, template, answer.text)


def test_alice_still_has_everything_after_bob_tried(team, alice):
    """Bob's requests changed nothing: alice's checkpoint is there, her model trains."""
    listed = team.call("GET", f"/api/v1/training_runs/{alice['model']}/checkpoints", ALICE).json()["checkpoints"]
    assert {"weights/s1", "sampler_weights/w1", "external_weights/x1"} <= {c["checkpoint_id"] for c in listed}
    assert not any("stolen" in c["checkpoint_id"] for c in listed)
    sampler = team.sdk(ALICE).create_sampling_client(model_path=alice["sampler_path"]).result()
    assert len(sampler.compute_logprobs(alice["types"].ModelInput.from_ints([5, 17, 23])).result()) == 3


@pytest.mark.parametrize("method,path", sorted(LISTS))
def test_lists_show_only_the_keys_own_and_everything_to_an_admin(team, alice, method, path):
    shown = {who: team.call(method, path, key, **LISTS[(method, path)]) for who, key in (("alice", ALICE), ("bob", BOB), ("root", ROOT))}
    assert all(answer.status_code == 200 for answer in shown.values()), {w: a.text for w, a in shown.items()}
    if "billing" in path:  # an aggregate: bob's storage holds none of alice's checkpoints
        count = {who: answer.json()["data"][0]["checkpoint_count"] for who, answer in shown.items()}
        assert count["bob"] == 0 and count["alice"] >= 3 and count["root"] >= count["alice"]
        return
    assert alice["session"] in shown["alice"].text and alice["session"] in shown["root"].text
    assert alice["session"] not in shown["bob"].text


def test_an_admin_reads_but_does_not_use_another_keys_things(team, alice):
    assert team.call("GET", f"/api/v1/training_runs/{alice['model']}", ROOT).json()["model_owner"] == "alice"
    assert team.call("POST", "/api/v1/get_info", ROOT, json={"model_id": alice["model"]}).status_code == 404
    assert team.call("POST", "/api/v1/retrieve_future", ROOT, json={"request_id": alice["request"]}).status_code == 404


def test_a_run_dir_names_its_owner_never_a_key(team, alice):
    run_dir = team.state.paths.root / alice["model"]
    assert (run_dir / ".owner").read_text().strip() == "alice"
    for file in team.state.paths.root.rglob("*"):
        if file.is_file() and file.stat().st_size < 1_000_000:
            assert ALICE.encode() not in file.read_bytes(), file


def test_ids_and_paths_are_not_guessable(team, alice):
    session_hex = alice["session"].removeprefix("session-")
    request_hex = alice["request"].removeprefix("req-")
    assert len(session_hex) == 32 and len(request_hex) == 32  # 128 random bits each
    assert alice["state"].startswith(f"tinker://{alice['session']}:train:")


def _sample(a: dict, tokens: list[int], num_samples: int = 1, **params) -> dict:
    return {"json": {"sampling_session_id": a["sampling_session"], "num_samples": num_samples,
                     "prompt": {"chunks": [{"type": "encoded_text", "tokens": tokens}]},
                     "sampling_params": {"max_tokens": 2, **params}}}


def _odd_tokens(a: dict) -> dict:
    message = __import__("tinker.proto.tinker_public_pb2", fromlist=["pb"]).ForwardBackwardRequest(
        model_id=a["model"], seq_id=1, loss_fn="cross_entropy")
    message.data.add().model_input.add().encoded_text.tokens = b"\x05\x00\x00"  # 3 bytes: no whole int32
    return {"content": message.SerializeToString(), "headers": {"Content-Type": "application/x-protobuf"}}


BAD_REQUESTS = {  # name: (method, path, request of alice's things, what the 400 says)
    "token outside the vocabulary": ("POST", "/api/v1/asample", lambda a: _sample(a, [5, 10**9]), "outside the model's vocabulary"),
    "empty prompt": ("POST", "/api/v1/asample", lambda a: _sample(a, []), "the prompt is empty"),
    "seed past torch's range": ("POST", "/api/v1/asample", lambda a: _sample(a, [5], seed=2**70), "seed must be between"),
    "a billion samples": ("POST", "/api/v1/asample", lambda a: _sample(a, [5], 10**9), "num_samples must be between 1 and 256"),
    "max_tokens past the context": ("POST", "/api/v1/asample", lambda a: _sample(a, [5], max_tokens=10**6), "does not fit the model's context"),
    "limit not a number": ("GET", "/api/v1/training_runs?limit=abc", lambda a: {}, "limit must be a whole number"),
    "negative offset": ("GET", "/api/v1/training_runs?offset=-5", lambda a: {}, "offset must be a whole number"),
    "token bytes not int32": ("POST", "/api/v1/forward_backward", _odd_tokens, "not a whole number of int32 tokens"),
    "checkpoint name that could not be loaded": ("POST", "/api/v1/save_weights", lambda a: {"json": {
        "model_id": a["model"], "path": "-odd name"}}, "invalid checkpoint name"),
    "external path not a name": ("POST", "/api/v1/save_weights_external", lambda a: {"json": {"model_id": a["model"], "path": "../x"}}, "x"),
    "no such base model": ("POST", "/api/v1/create_sampling_session", lambda a: {"json": {
        "session_id": a["session"], "sampling_session_seq_id": 11, "base_model": "no-such-model"}}, "no-such-model"),
    "chat text not a string": ("POST", "/oai/api/v1/chat/completions", lambda a: {"json": {
        "model": a["sampler_path"], "messages": [{"role": "user", "content": [{"type": "text", "text": 5}]}]}}, "messages.0.content"),
}


@pytest.mark.parametrize("name", BAD_REQUESTS)
def test_a_bad_request_gets_its_own_400_and_the_server_serves_on(team, alice, name):
    """Requests that once answered 500 (or, for samples, failed every key's requests batched
    with them): each is a 400 naming what is wrong, and a good request works right after."""
    method, path, make, message = BAD_REQUESTS[name]
    request = make(alice)
    headers = {"X-API-Key": ALICE, **request.pop("headers", {})}
    answer = httpx.request(method, team.url + path, headers=headers, timeout=60, **request)
    assert answer.status_code == 400, answer.text
    assert message in answer.text
    good = team.call("POST", "/api/v1/asample", ALICE, **_sample(alice, [5, 17]))
    assert good.status_code == 200, good.text
    done = team.call("POST", "/api/v1/retrieve_future", ALICE, json={"request_id": good.json()["request_id"]})
    assert done.status_code == 200 and done.headers["content-type"] == "application/x-protobuf", done.text  # errors are JSON


def test_a_finished_session_leaves_every_listing_working(team):
    """A session finished with a model never saved (its run dir holds only its owner), and with
    a detail that is no string: the runs and sessions listings still answer, the admin's too."""
    session = _session(team, BOB)
    _model(team, BOB, session)
    finish = team.call("POST", f"/api/v1/sessions/{session}/finish", BOB,
                       json={"reason": {"type": "errored"}, "detail": {"x": 1}})
    assert finish.status_code == 200, finish.text
    for key in (BOB, ROOT):
        runs = team.call("GET", "/api/v1/training_runs", key)
        assert runs.status_code == 200, runs.text
        assert not any(r["training_run_id"].startswith(session) for r in runs.json()["training_runs"])
        found = team.call("POST", "/api/v1/sessions/search", key, json={})
        assert found.status_code == 200, found.text


def test_keys_load_only_the_base_models_the_operator_allows(tmp_path):
    """Every base model costs its size in memory and a path names whatever is on the server's
    disk: with keys, a model dir loads only when the operator lists it (``--base-model``), and
    with ``--base-model`` given, nothing else loads at all."""
    import shutil

    from tinkerplug.models import shipped_model_dir

    other = tmp_path / "other-model"
    shutil.copytree(shipped_model_dir(MODEL), other)
    default = TeamServer(tmp_path / "a", keyring(tmp_path), disk_models=False)
    listed = TeamServer(tmp_path / "b", keyring(tmp_path), base_models=(str(other),))
    try:
        cases = [(default, MODEL, 200), (default, str(shipped_model_dir(MODEL)), 200), (default, str(other), 400),
                 (default, "/etc", 400), (listed, str(other), 200), (listed, MODEL, 400)]
        for server, base, status in cases:
            session = _session(server, ALICE)
            for path, body in (("/api/v1/create_model", {"session_id": session, "model_seq_id": 0, "base_model": base}),
                               ("/api/v1/create_sampling_session", {"session_id": session, "sampling_session_seq_id": 0,
                                                                    "base_model": base})):
                answer = server.call("POST", path, ALICE, json=body)
                assert answer.status_code == status, (base, path, answer.text)
            if status == 400:
                assert "tinkerplug serve --base-model" in answer.text or "is not served here" in answer.text
            chat = server.call("POST", "/oai/api/v1/completions", ALICE, json={"model": base, "prompt": [5, 17], "max_tokens": 1})
            assert chat.status_code == (200 if status == 200 else 404), (base, chat.text)
    finally:
        default.stop()
        listed.stop()


# -- keys files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("text,message", [
    ('[a]\nkey = "tml-same"\n[b]\nkey = "tml-same"\n', "has the same key as keys file"),
    ('[a]\nkey = ""\n', "has an empty key"),
    ('[a]\nadmin = true\n', "has an empty key"),
    ('[a]\nkey = "secret"\n', "must start with 'tml-'"),
    ('[a]\nkey = "tml-x"\nmax_model = 3\n', "unknown setting 'max_model'"),
    ('[a]\nkey = "tml-x"\nmax_models = -1\n', "whole numbers >= 0"),
    ('[local]\nkey = "tml-x"\n', "invalid key name 'local'"),
    ('a = [1\n', "is not valid TOML"),
])
def test_a_bad_keys_file_is_refused_with_one_clear_message(tmp_path, text, message):
    from conftest import run_cli

    keys = tmp_path / "keys.toml"
    keys.write_text(text)
    refused = run_cli("serve", "--keys-file", str(keys), "--checkpoint-dir", str(tmp_path / "ck"), env={"TINKERPLUG_SERVE_KEYS": ""})
    assert refused.returncode != 0 and "Traceback" not in refused.stderr
    assert message in refused.stderr and str(keys) in refused.stderr
    assert "tml-same" not in refused.stderr and "secret" not in refused.stderr  # keys are never shown
    assert not (tmp_path / "ck").exists()


def test_keys_from_the_environment_and_options_are_principals_too():
    from tinkerplug.errors import TinkerplugError
    from tinkerplug_local.server.principals import Limits, load_keyring

    ring = load_keyring(("carol=tml-c1", "tml-anon"), "dave=tml-d1, tml-e1", None, Limits(max_models=2), "ENV")
    assert ring.identify(b"tml-c1").name == "carol" and ring.identify(b"tml-d1").name == "dave"
    assert ring.identify(b"tml-anon").name.startswith("key-") and "anon" not in ring.identify(b"tml-anon").name
    assert ring.identify(b"tml-c1").limits.max_models == 2 and ring.identify(b"tml-nope") is None
    with pytest.raises(TinkerplugError, match="ENV entry 1 has the same key as --api-key #1"):
        load_keyring(("tml-c1",), "tml-c1", None, Limits(), "ENV")


# -- limits, health, metrics, shutdown ----------------------------------------------------------


def _blocked_worker(server):
    """Occupy the base model's worker until the returned event is set: requests queue behind it."""
    release = threading.Event()
    host = server.state.service.hosts()[0]
    host.worker.submit(lambda: release.wait(60))
    return release


def _session(server, key: str) -> str:
    answer = server.call("POST", "/api/v1/create_session", key, json=SESSION)
    assert answer.status_code == 200, answer.text
    return answer.json()["session_id"]


def _model(server, key: str, session: str, seq: int = 0) -> str:
    answer = server.call("POST", "/api/v1/create_model", key, json={"session_id": session, "model_seq_id": seq, "base_model": MODEL,
                                                                    "lora_config": {"rank": 4}})
    assert answer.status_code == 200, answer.text
    done = server.call("POST", "/api/v1/retrieve_future", key, json={"request_id": answer.json()["request_id"]})
    assert done.status_code == 200 and done.json()["model_id"], done.text
    return done.json()["model_id"]


@pytest.fixture
def limited(tmp_path):
    server = TeamServer(tmp_path / "checkpoints", keyring(tmp_path, max_sessions=2, max_models=1, max_queued=2))
    yield server
    server.stop()


def test_per_key_limits_answer_429_with_retry_after_and_spare_other_keys(limited):
    sessions = [_session(limited, ALICE), _session(limited, ALICE)]
    third = limited.call("POST", "/api/v1/create_session", ALICE, json=SESSION)
    assert third.status_code == 429 and third.headers["retry-after"] == "60" and third.headers["x-should-retry"] == "false"
    assert "'alice' has 2 open sessions, its limit" in third.json()["detail"]
    model = _model(limited, ALICE, sessions[0])
    second = limited.call("POST", "/api/v1/create_model", ALICE, json={"session_id": sessions[1], "model_seq_id": 0, "base_model": MODEL})
    assert second.status_code == 429 and "1 training models, its limit" in second.json()["detail"]
    bob_model = _model(limited, BOB, _session(limited, BOB))  # bob has limits of his own

    release = _blocked_worker(limited)
    step = {"model_id": model, "adam_params": {"learning_rate": 1e-3}}
    queued = [limited.call("POST", "/api/v1/optim_step", ALICE, json=step) for _ in range(2)]
    over = limited.call("POST", "/api/v1/optim_step", ALICE, json=step)
    bob = limited.call("POST", "/api/v1/optim_step", BOB, json={**step, "model_id": bob_model})
    release.set()
    assert [q.status_code for q in queued] == [200, 200] and bob.status_code == 200
    assert over.status_code == 429 and over.headers["retry-after"] == "1" and "x-should-retry" not in over.headers  # the SDK retries it
    assert "2 requests queued, its limit" in over.json()["detail"]
    for answer in [*queued, bob]:
        key = BOB if answer is bob else ALICE
        done = limited.call("POST", "/api/v1/retrieve_future", key, json={"request_id": answer.json()["request_id"]})
        assert done.status_code == 200 and "metrics" in done.json(), done.text
    assert limited.call("POST", "/api/v1/optim_step", ALICE, json=step).status_code == 200  # the queue drained


def test_a_model_made_after_its_session_finished_is_freed_and_not_counted(limited):
    """A session finished while its model was still being made (queued on the worker): the
    model is freed instead of being registered to a session that no longer exists, so it does
    not count against the key's model limit."""
    _model(limited, BOB, _session(limited, BOB))  # the base model is loaded
    session = _session(limited, ALICE)
    release = _blocked_worker(limited)
    answer = limited.call("POST", "/api/v1/create_model", ALICE, json={"session_id": session, "model_seq_id": 0,
                                                                      "base_model": MODEL, "lora_config": {"rank": 4}})
    assert answer.status_code == 200, answer.text
    assert limited.call("POST", f"/api/v1/sessions/{session}/finish", ALICE, json={}).status_code == 200
    release.set()
    done = limited.call("POST", "/api/v1/retrieve_future", ALICE, json={"request_id": answer.json()["request_id"]})
    assert "finished before model" in done.json()["error"], done.text
    assert [m.owner for m in limited.state.models.values()] == ["bob"]
    _model(limited, ALICE, _session(limited, ALICE))  # alice's limit of one model is free


def test_healthz_needs_no_key_and_metrics_an_admin_key(team, alice):
    assert team.call("GET", "/healthz", None).json() == {"status": "ok"}
    assert team.call("GET", "/metrics", BOB).status_code == 404
    assert team.call("GET", "/metrics", None).status_code == 401
    assert team.call("POST", "/api/v1/get_info", BOB, json={"model_id": alice["model"]}).status_code == 404
    text = team.call("GET", "/metrics", ROOT).text
    assert 'tinkerplug_models{key="alice"}' in text and 'tinkerplug_sessions{key="alice"}' in text
    assert 'tinkerplug_adapters_resident{base_model="tiny-chat"}' in text
    assert 'tinkerplug_request_seconds{kind="forward_backward",quantile="0.95"}' in text
    assert 'tinkerplug_http_requests_total{key="bob",endpoint="get_info",status="404"}' in text
    assert "tinkerplug_queue_depth" in text and ALICE not in text and BOB not in text


def test_shutdown_finishes_queued_work_and_takes_no_more(limited):
    from tinkerplug_local.server.shutdown import drain

    model = _model(limited, ALICE, _session(limited, ALICE))
    step = {"model_id": model, "adam_params": {"learning_rate": 1e-3}}
    release = _blocked_worker(limited)
    first = limited.call("POST", "/api/v1/optim_step", ALICE, json=step).json()["request_id"]
    threading.Timer(0.5, release.set).start()  # the running job ends during the drain: what is queued finishes
    assert drain(limited.state, 10.0) == (1, 0)
    assert "metrics" in limited.call("POST", "/api/v1/retrieve_future", ALICE, json={"request_id": first}).json()
    refused = limited.call("POST", "/api/v1/optim_step", ALICE, json=step)
    assert refused.status_code == 503 and "shutting down" in refused.json()["detail"]
    assert limited.call("GET", "/healthz", None).status_code == 503


def test_shutdown_fails_work_that_does_not_finish_in_time(limited):
    from tinkerplug_local.server.shutdown import SHUTDOWN_MESSAGE, drain

    model = _model(limited, ALICE, _session(limited, ALICE))
    step = {"model_id": model, "adam_params": {"learning_rate": 1e-3}}
    release = _blocked_worker(limited)
    queued = [limited.call("POST", "/api/v1/optim_step", ALICE, json=step).json()["request_id"] for _ in range(2)]
    threading.Timer(1.0, release.set).start()  # runs out after the 0.2 s timeout: both are failed
    assert drain(limited.state, 0.2) == (0, 2)
    for request_id in queued:
        answer = limited.call("POST", "/api/v1/retrieve_future", ALICE, json={"request_id": request_id}).json()
        assert answer["category"] == "server" and SHUTDOWN_MESSAGE in answer["error"]


@pytest.mark.slow
def test_tls_and_a_graceful_sigterm_of_the_real_command(tmp_path):
    import shutil
    import signal
    import ssl
    import subprocess
    import sys

    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a self-signed certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    log = tmp_path / "serve.log"
    with open(log, "w") as out:
        process = subprocess.Popen([sys.executable, "-m", "tinkerplug.cli", "serve", "--port", str(port), "--device", "cpu",
                                    "--checkpoint-dir", str(tmp_path / "ck"), "--api-key", ALICE,
                                    "--ssl-certfile", str(cert), "--ssl-keyfile", str(key)], stdout=out, stderr=subprocess.STDOUT)
    url = f"https://127.0.0.1:{port}"
    trust = ssl.create_default_context(cafile=str(cert))
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            try:
                if httpx.get(url + "/healthz", verify=trust, timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        answer = httpx.post(url + "/api/v1/get_server_capabilities", headers={"X-API-Key": ALICE}, verify=trust, timeout=30)
        assert answer.status_code == 200 and answer.json()["supported_models"]
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).raise_for_status()  # no plain HTTP beside TLS
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    finally:
        if process.poll() is None:
            process.kill()
    text = log.read_text()
    assert f"https://127.0.0.1:{port}" in text and "shutting down: 0 queued requests finished, 0 failed" in text, text
    assert ALICE not in text
