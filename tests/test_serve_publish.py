"""Published checkpoints on ``tinkerplug serve``: readable by every key (load, sample, ask what
they are, the OpenAI routes), changeable only by their owner; unpublished, hidden again (404)."""

from __future__ import annotations

import pytest

from test_serve_team import ALICE, BOB, MODEL, TeamServer, datum, keyring


@pytest.fixture(scope="module")
def shared(tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("publish")
    server = TeamServer(root / "checkpoints", keyring(root))
    import tinker

    client = server.sdk(ALICE).create_lora_training_client(MODEL, rank=4, seed=0).result()
    client.forward_backward([datum([5, 17, 23, 42, 9])], "cross_entropy").result()
    client.optim_step(tinker.types.AdamParams(learning_rate=1e-2)).result()
    paths = {"state": client.save_state("s1").result().path, "sampler": client.save_weights_for_sampler("w1").result().path}
    yield server, client, paths
    server.stop()


def _publish(server, path: str, key: str, method: str = "POST"):
    run, kind, name = path.removeprefix("tinker://").split("/")
    return server.call(method, f"/api/v1/training_runs/{run}/checkpoints/{kind}/{name}/publish", key)


def _bob_reads(server, paths: dict) -> dict[str, int]:
    """The status of each read of alice's checkpoints by bob."""
    return {
        "weights_info": server.call("POST", "/api/v1/weights_info", BOB, json={"tinker_path": paths["state"]}).status_code,
        "sampler": server.call("POST", "/api/v1/create_sampling_session", BOB, json={
            "session_id": "x", "sampling_session_seq_id": 0, "model_path": paths["sampler"]}).status_code,
        "load": server.call("POST", "/api/v1/load_weights", BOB, json={
            "path": paths["state"], "optimizer": False, "session_id": "x", "model_seq_id": 0}).status_code,
        "chat": server.call("POST", "/oai/api/v1/chat/completions", BOB, json={
            "model": paths["sampler"], "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]}).status_code,
    }


def test_a_published_checkpoint_is_readable_by_another_key_until_unpublished(shared):
    import tinker

    server, client, paths = shared
    assert set(_bob_reads(server, paths).values()) == {404}  # before: alice's alone
    for path in paths.values():
        assert _publish(server, path, ALICE).status_code == 200
    bob = server.sdk(BOB)
    info = tinker.RestClient(base_url=server.url, api_key=BOB).get_weights_info_by_tinker_path(paths["state"]).result()
    assert (info.base_model, info.lora_rank) == (MODEL, 4)
    prompt = tinker.types.ModelInput.from_ints([5, 17, 23, 42])
    theirs = bob.create_sampling_client(model_path=paths["sampler"]).result().compute_logprobs(prompt).result()
    ours = server.sdk(ALICE).create_sampling_client(model_path=paths["sampler"]).result().compute_logprobs(prompt).result()
    assert theirs == ours  # bob samples alice's trained weights, not the base model
    copy = bob.create_training_client_from_state(paths["state"]).result()  # into bob's own model
    batch = [datum([5, 17, 23, 42, 9])]
    mine = client.forward(batch, "cross_entropy").result().loss_fn_outputs[0]["logprobs"].tolist()
    assert copy.forward(batch, "cross_entropy").result().loss_fn_outputs[0]["logprobs"].tolist() == pytest.approx(mine, abs=1e-6)
    chat = server.call("POST", "/oai/api/v1/chat/completions", BOB, json={
        "model": paths["sampler"], "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]})
    assert chat.status_code == 200, chat.text

    # Only the owner changes it: bob cannot unpublish, set a TTL or delete (404, as if absent).
    run, kind, name = paths["state"].removeprefix("tinker://").split("/")
    assert _publish(server, paths["state"], BOB, "DELETE").status_code == 404
    assert server.call("PUT", f"/api/v1/training_runs/{run}/checkpoints/{kind}/{name}/ttl", BOB, json={"ttl_seconds": 5}).status_code == 404
    assert server.call("DELETE", f"/api/v1/training_runs/{run}/checkpoints/{kind}/{name}", BOB).status_code == 404
    # bob's copy trains bob's adapter only: alice's checkpoint is unchanged
    copy.forward_backward(batch, "cross_entropy").result()
    copy.optim_step(tinker.types.AdamParams(learning_rate=1e-1)).result()
    again = server.sdk(ALICE).create_sampling_client(model_path=paths["sampler"]).result().compute_logprobs(prompt).result()
    assert again == ours

    for path in paths.values():
        assert _publish(server, path, ALICE, "DELETE").status_code == 200
    assert set(_bob_reads(server, paths).values()) == {404}  # hidden again, the OpenAI route's cache included
