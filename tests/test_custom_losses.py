"""Uploaded custom losses (``create_custom_loss`` + ``forward_backward(data, "custom", ...)``):
one pass equal to the SDK's client-side two passes, in-process and over ``serve``; hostile
graphs refused by the whitelist, naming the operation; the server keeps serving and writes
nothing."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from tinker import types

from tinkerplug_local.loss_graph import GraphError, compile_graph

MODEL = "tiny-chat"
RANKS = {"logprobs": 1, "chosen": 1, "rejected": 1, "ref_margin": 0}


def dpo(logprobs, chosen, rejected, ref_margin):
    """DPO in the per-datum form create_custom_loss takes: one datum holds the prompt, the chosen
    and the rejected reply (masks mark each), with the reference model's margin as a scalar."""
    margin = (logprobs * chosen).sum() - (logprobs * rejected).sum() - ref_margin
    loss = -torch.nn.functional.logsigmoid(0.1 * margin)
    return loss, {"custom/margin:mean": margin, "custom/accuracy:mean": (margin > 0).float()}


def pairs() -> list[types.Datum]:
    out = []
    for i, ref in enumerate([0.3, -1.2, 2.0]):
        tokens = [5 + i, 17, 23, 42 + i, 9, 11, 30 + i, 7, 8]
        n = len(tokens) - 1
        chosen = torch.tensor([0.0, 0, 1, 1, 0, 0, 0, 0][:n])
        out.append(types.Datum(model_input=types.ModelInput.from_ints(tokens[:-1]), loss_fn_inputs={
            "target_tokens": tokens[1:], "chosen": chosen, "rejected": torch.tensor([0.0, 0, 0, 0, 1, 1, 1, 0][:n]),
            "ref_margin": torch.tensor(ref),
        }))
    return out


def node(op: str, name: str, target: str, args: list | None = None, kwargs: dict | None = None) -> types.CustomLossNode:
    return types.CustomLossNode(op=op, name=name, target=target, args=args or [], kwargs=kwargs or {})


def graph_calling(*middle: types.CustomLossNode, result: str = "bad") -> list[types.CustomLossNode]:
    """logprobs in, ``middle``, then (sum of ``result``, {}) out."""
    return [
        node("placeholder", "logprobs", "logprobs"), *middle,
        node("call_method", "total", "sum", [{"ref": result}]),
        node("output", "output", "output", [{"tuple": [{"ref": "total"}, {"dict": {}}]}]),
    ]


INPUTS = [types.CustomLossInput(name="logprobs", rank=1)]
HOSTILE = [
    (graph_calling(node("call_function", "bad", "os.system", ["touch /tmp/pwned"])), "calls 'os.system', which is not an allowed operation"),
    (graph_calling(node("call_function", "bad", "builtins.open", ["/etc/passwd"])), "calls 'builtins.open', which is not an allowed"),
    (graph_calling(node("call_function", "bad", "builtins.eval", ["1"])), "calls 'builtins.eval'"),
    (graph_calling(node("call_function", "bad", "torch.save", [{"ref": "logprobs"}, "/tmp/x.pt"])), "calls 'torch.save'"),
    (graph_calling(node("call_function", "cls", "getattr", [{"ref": "logprobs"}, "__class__"]),
                   node("call_function", "bad", "getattr", [{"ref": "cls"}, "__init__"])), "node 'cls' calls getattr with \\['__class__'\\]"),
    (graph_calling(node("call_method", "bad", "__reduce_ex__", [{"ref": "logprobs"}, 2])), "calls method '__reduce_ex__'"),
    (graph_calling(node("call_method", "bad", "item", [{"ref": "logprobs"}])), "calls method 'item'"),
    (graph_calling(node("get_attr", "bad", "weight")), "get_attr 'weight' is not allowed"),
    (graph_calling(node("call_module", "bad", "linear", [{"ref": "logprobs"}])), "call_module 'linear' is not allowed"),
    (graph_calling(node("call_method", "bad", "to", [{"ref": "logprobs"}, {"device": "cuda:0"}])), "'device' argument"),
    (graph_calling(node("call_method", "bad", "to", [{"ref": "logprobs"}, "cuda"])), "names a device or an output tensor"),
    (graph_calling(node("call_function", "bad", "torch.exp", [{"ref": "logprobs"}], {"out": {"ref": "logprobs"}})), "names a device or an output"),
    (graph_calling(node("call_method", "bad", "exp", [{"ref": "later"}])), "refers to 'later', which is not an earlier node"),
    (graph_calling(node("call_function", "big", "operator.mul", [[0], 10**9]), result="logprobs"), None),  # refused when run
]


@pytest.mark.parametrize("nodes, match", [h for h in HOSTILE if h[1]])
def test_hostile_graphs_are_refused_naming_the_operation(nodes, match):
    with pytest.raises(GraphError, match=match):
        compile_graph("evil", INPUTS, nodes)


def test_python_values_cannot_be_blown_up_and_a_vector_loss_is_refused(service):
    graph = compile_graph("evil", INPUTS, HOSTILE[-1][0])
    with pytest.raises(GraphError, match="operator.mul on a list is not allowed"):
        graph.run(torch.zeros(3))
    with pytest.raises(GraphError, match="must return a scalar loss, got shape \\[5\\]"):
        service.create_custom_loss(lambda logprobs: (logprobs * 2, {}), {"logprobs": 1})


# -- in-process ----------------------------------------------------------------------------------


def _grads(client) -> list[torch.Tensor]:
    grads = [p.grad.clone() for p in client._params()]
    for p in client._params():
        p.grad = None
    return grads


def test_an_uploaded_dpo_loss_in_one_pass_equals_the_sdks_two_passes(service, monkeypatch):
    import tinkerplug_local.custom as custom

    client = service.create_lora_training_client(MODEL, rank=4, seed=0).result()
    handle = service.create_custom_loss(dpo, RANKS).result()
    assert handle.loss_id and handle.name == "dpo"
    calls: list[bool] = []
    original = client._logprobs
    monkeypatch.setattr(client, "_logprobs", lambda data, grad: calls.append(grad) or original(data, grad))
    uploaded = client.forward_backward_custom(pairs(), handle).result()
    assert calls == [True]  # one forward, with the graph kept
    one_pass = _grads(client)
    monkeypatch.setattr(custom, "ONE_PASS_MAX_TOKENS", 0)  # the SDK's way: forward, loss, cross_entropy backward
    calls.clear()
    two = client.forward_backward_custom(pairs(), dataclasses.replace(handle, loss_id=None)).result()
    assert calls == [False, True]
    for key in ("loss:sum", "custom/margin:mean", "custom/accuracy:mean"):
        assert uploaded.metrics[key] == pytest.approx(two.metrics[key], rel=1e-6, abs=1e-7)
    for a, b in zip(one_pass, _grads(client)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-8)
    assert any(float(g.abs().sum()) > 0 for g in one_pass)


def test_bad_custom_requests_name_the_datum_key_or_loss(service):
    client = service.create_lora_training_client(MODEL, rank=4, seed=0).result()
    handle = service.create_custom_loss(dpo, RANKS).result()
    data = pairs()
    missing = types.Datum(model_input=data[1].model_input, loss_fn_inputs={k: v for k, v in data[1].loss_fn_inputs.items() if k != "chosen"})
    with pytest.raises(ValueError, match=r"datum 1: loss 'dpo' reads loss_fn_inputs\['chosen'\], which the datum lacks"):
        client.forward_backward([data[0], missing], "custom", {"loss_id": handle.loss_id})
    with pytest.raises(ValueError, match="names no loss this session created"):
        client.forward_backward(data, "custom", {"loss_id": "local:loss:nope"})
    with pytest.raises(ValueError, match="takes loss_fn_config {'loss_id': ...} only"):
        client.forward_backward(data, "custom", {"loss_id": handle.loss_id, "beta": 0.1})
    assert client.forward(data, "custom", {"loss_id": handle.loss_id}).result().metrics["loss:sum"] > 0


# -- over serve ----------------------------------------------------------------------------------


def _files(root) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*"))


@pytest.mark.slow
def test_over_serve_uploaded_equals_two_pass_and_hostile_graphs_get_400(tmp_path):
    import tinker

    from test_serve import Server, sdk

    server = Server(tmp_path / "checkpoints")
    try:
        service = sdk(server)
        handle = service.create_custom_loss(dpo, RANKS).result(timeout=60)
        assert handle.loss_id and handle.loss_id.endswith(":loss:0")
        results = {}
        for name, used in (("uploaded", handle), ("two passes", dataclasses.replace(handle, loss_id=None))):
            client = service.create_lora_training_client(MODEL, rank=4, seed=0).result()
            metrics = client.forward_backward_custom(pairs(), used).result(timeout=60).metrics
            client.optim_step(types.AdamParams(learning_rate=1e-2)).result(timeout=60)
            after = client.forward(pairs(), "custom", {"loss_id": handle.loss_id}).result(timeout=60)
            results[name] = (metrics, [o["logprobs"].to_torch() for o in after.loss_fn_outputs])
        (m1, lp1), (m2, lp2) = results["uploaded"], results["two passes"]
        assert "surrogate_loss:sum" in m2 and "surrogate_loss:sum" not in m1  # the SDK really took two passes
        for key in ("loss:sum", "custom/margin:mean"):
            assert m1[key] == pytest.approx(m2[key], rel=1e-6)
        for a, b in zip(lp1, lp2):  # the same update: the same weights after it
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
        _hostile_over_http(server, service, handle, tmp_path / "checkpoints")
        stranger = sdk(server).create_lora_training_client(MODEL, rank=4, seed=0).result()
        with pytest.raises(tinker.BadRequestError, match="names no loss this session created"):
            stranger.forward_backward(pairs(), "custom", {"loss_id": handle.loss_id}).result(timeout=60)
        assert server.healthy()
    finally:
        server.stop()


def _hostile_over_http(server, service, handle, root) -> None:
    import httpx

    from test_serve import KEY

    before = _files(root)
    session = service.holder.get_session_id()
    for seq, (nodes, match) in enumerate(HOSTILE[:-1], start=100):
        body = types.CreateCustomLossRequest(session_id=session, custom_loss_seq_id=seq, name="evil", inputs=INPUTS,
                                             graph=types.CustomLossGraph(nodes=nodes))
        answer = httpx.post(server.url + "/api/v1/create_custom_loss", json=body.model_dump(mode="json"),
                            headers={"X-API-Key": KEY}, timeout=30)
        assert answer.status_code == 400, answer.text
        assert "POST /api/v1/create_custom_loss: loss 'evil':" in answer.json()["detail"]
        assert server.healthy()
    assert _files(root) == before  # nothing written, nothing read into a checkpoint


def test_the_number_of_kept_losses_is_bounded_per_key(monkeypatch):
    import tinkerplug_local.uploaded as uploaded

    monkeypatch.setattr(uploaded, "MAX_LOSSES", 2)
    store, nodes = uploaded.UploadedLosses(), graph_calling(node("call_method", "bad", "exp", [{"ref": "logprobs"}]))
    store.create(None, "a", "ok", INPUTS, nodes)
    store.create(None, "b", "ok", INPUTS, nodes)
    with pytest.raises(ValueError, match="keeps 2 custom losses, its limit"):
        store.create(None, "c", "ok", INPUTS, nodes)
    assert store.get("a", None) is not None
    with pytest.raises(ValueError, match="names no loss this session created"):
        store.get("a", "another-session")
    store.drop(None)  # its session finished
    assert len(store) == 0
    for i in range(2):  # over serve the limit is per API key: one key cannot use up another's
        store.create(f"s{i}", f"alice-{i}", "ok", INPUTS, nodes, key="alice")
    with pytest.raises(ValueError, match="key 'alice' keeps 2 custom losses"):
        store.create("s9", "alice-9", "ok", INPUTS, nodes, key="alice")
    store.create("s3", "bob-0", "ok", INPUTS, nodes, key="bob")
    store.drop("s0")
    store.create("s0", "alice-again", "ok", INPUTS, nodes, key="alice")
