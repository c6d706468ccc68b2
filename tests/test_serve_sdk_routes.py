"""The SDK 0.38 calls ``tinkerplug serve`` answers beyond training and sampling: sessions,
checkpoint TTL (real expiry), publish flags, deletion by id, copies, storage usage, the
tokenizer offline, cancelled futures, and the refusals of what one machine does not serve.
Real SDK clients against serve's app on a thread of this process."""

from __future__ import annotations

import time

import httpx
import pytest

KEY = "tml-routes-test"
MODEL = "tiny-chat"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    import tinker

    from tinkerplug_local.server.thread import ThreadServer

    with ThreadServer(tmp_path_factory.mktemp("routes") / "checkpoints", api_keys=[KEY]) as server:
        service = tinker.ServiceClient(base_url=server.url, api_key=KEY, user_metadata={"team": "a"}, display_name="routes")
        training = service.create_lora_training_client(MODEL, rank=4, seed=0).result()
        yield server, service, training, service.create_rest_client()


def test_sessions_get_list_and_search(served) -> None:
    from tinker import types

    server, service, training, rest = served
    session_id = service.holder.get_session_id()
    sampler = training.save_weights_and_get_sampling_client().result()
    got = rest.get_session(session_id).result()
    assert got.training_run_ids == [training.model_id] and got.display_name == "routes"
    assert got.user_metadata == {"team": "a"} and sampler._sampling_session_id in got.sampler_ids
    assert session_id in rest.list_sessions().result().sessions
    found = rest.search_sessions(types.SessionSearchRequest(user_metadata={"team": "a"})).result().sessions
    assert [s.session_id for s in found] == [session_id] and found[0].status.type == "active"
    assert rest.search_sessions(types.SessionSearchRequest(user_metadata={"team": "b"})).result().sessions == []
    with pytest.raises(Exception, match="unknown session"):
        rest.get_session("session-nope").result(timeout=30)


def test_ttl_expires_for_real_and_publish_flags_show(served) -> None:
    server, _, training, rest = served
    path = training.save_state("short-lived", ttl_seconds=3600).result().path
    listed = {c.tinker_path: c for c in rest.list_checkpoints(training.model_id).result().checkpoints}
    assert listed[path].expires_at is not None and listed[path].public is False
    rest.publish_checkpoint_from_tinker_path(path).result()
    assert {c.tinker_path: c.public for c in rest.list_checkpoints(training.model_id).result().checkpoints}[path]
    rest.unpublish_checkpoint_from_tinker_path(path).result()
    assert not {c.tinker_path: c.public for c in rest.list_checkpoints(training.model_id).result().checkpoints}[path]

    rest.set_checkpoint_ttl_from_tinker_path(path, 1).result()
    directory = server.state.paths.to_local(path)
    time.sleep(1.2)
    assert path not in [c.tinker_path for c in rest.list_checkpoints(training.model_id).result().checkpoints]
    assert not directory.exists()  # deleted from disk, not just hidden
    with pytest.raises(Exception, match="does not exist"):
        rest.set_checkpoint_ttl_from_tinker_path(path, 3600).result(timeout=30)
    keep = training.save_state("kept", ttl_seconds=3600).result().path
    rest.set_checkpoint_ttl_from_tinker_path(keep, None).result()  # null: never expires
    assert {c.tinker_path: c.expires_at for c in rest.list_checkpoints(training.model_id).result().checkpoints}[keep] is None
    bad = httpx.put(f"{server.url}/api/v1/training_runs/{training.model_id}/checkpoints/weights/kept/ttl",
                    json={"ttl_seconds": -5}, headers={"X-API-Key": KEY})
    assert bad.status_code == 400 and "ttl_seconds" in bad.json()["detail"]


def test_delete_by_bare_id_copy_and_storage_usage(served) -> None:
    import warnings

    server, service, training, rest = served
    sampler_path = training.save_weights_for_sampler("to-copy").result().path
    copied = rest.copy_weights(sampler_path, "proj").result()
    assert copied != sampler_path and copied.endswith("/sampler_weights/to-copy")
    answer = service.create_sampling_client(model_path=copied).result()
    assert answer.get_base_model()  # the copy loads as sampler weights

    training.save_state("bare").result()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        before = rest.get_current_checkpoint_storage_usage().result().data[0]
    rest.delete_checkpoint(training.model_id, "bare").result()  # no kind: the one checkpoint of that name
    assert "weights/bare" not in [c.checkpoint_id for c in rest.list_checkpoints(training.model_id).result().checkpoints]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        after = rest.get_current_checkpoint_storage_usage().result().data[0]
    assert after.checkpoint_count == before.checkpoint_count - 1 and after.size_bytes < before.size_bytes
    on_disk = [d for d in server.state.paths.root.glob("*/*/*") if d.is_dir() and not d.name.startswith(".")]
    assert after.checkpoint_count == len(on_disk)


def test_tokenizers_load_offline_and_training_run_by_path(served) -> None:
    server, service, training, rest = served
    path = training.save_weights_for_sampler("tok").result().path
    sampler = service.create_sampling_client(model_path=path).result()
    assert sampler.get_tokenizer().encode("abc") == training.get_tokenizer().encode("abc")
    assert rest.get_training_run_by_tinker_path(path).result().training_run_id == training.model_id


def test_cross_entropy_without_weights_is_refused_naming_the_datum(served) -> None:
    from tinker import types

    _, _, training, _ = served
    datum = types.Datum(model_input=types.ModelInput.from_ints([5, 6, 7]), loss_fn_inputs={"target_tokens": [6, 7, 8]})
    with pytest.raises(Exception, match=r"datum 0: cross_entropy needs loss_fn_inputs\['weights'\]"):
        training.forward_backward([datum], "cross_entropy").result(timeout=60)


def test_cancel_future_and_refusals_say_why(served) -> None:
    from concurrent.futures import Future

    server, _, _, _ = served
    queued: Future = Future()  # never started: cancelling it works
    from tinkerplug_local.server.principals import anonymous_name

    request_id = server.state.futures.add(queued, lambda r: r, owner=anonymous_name(KEY))  # the key's own request
    headers = {"X-API-Key": KEY}
    assert httpx.post(server.url + "/api/v1/cancel_future", json={"request_id": request_id}, headers=headers).status_code == 200
    answer = httpx.post(server.url + "/api/v1/retrieve_future", json={"request_id": request_id}, headers=headers).json()
    assert "cancelled" in answer["error"] and answer["category"] == "user"
    for method, route in [("GET", "/api/v1/audit"), ("PUT", "/api/v1/sessions/s/project"), ("GET", "/api/v1/nothing")]:
        refused = httpx.request(method, server.url + route, headers=headers)
        assert refused.status_code == 404 and "not served by tinkerplug serve: " in refused.json()["detail"]
        assert refused.headers["x-should-retry"] == "false"


def test_futures_are_kept_from_when_they_finish_not_when_they_were_submitted() -> None:
    """A request queued longer than the keep time must still be answered when it finishes (the
    SDK polls without a deadline); a delivered one stays for a client whose answer was lost."""
    from concurrent.futures import Future

    from tinkerplug_local.server import futures as futures_module

    table = futures_module.FutureTable()
    slow: Future = Future()
    request_id = table.add(slow, lambda r: r)
    table.get(request_id, "local").created -= 10 * futures_module.KEEP_UNRETRIEVED_S  # queued for hours
    table._sweep()
    assert table.get(request_id, "local") is not None  # never swept while it runs
    slow.set_result("done")
    table._sweep()
    assert table.get(request_id, "local") is not None  # just finished: kept for the poll that comes next
    pending = table.get(request_id, "local")
    pending.finished -= futures_module.KEEP_UNRETRIEVED_S + 1
    table._sweep()
    assert table.get(request_id, "local") is None  # finished and never fetched for an hour: dropped
