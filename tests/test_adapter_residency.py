"""``--max-adapters``: idle training adapters wait on disk with their optimizer state and come
back exactly (the local backend, in process; serve passes the option through)."""

from __future__ import annotations

import pytest

MODEL = "tiny-chat"


def datum(tokens: list[int]):
    from tinker import types

    return types.Datum(
        model_input=types.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={"target_tokens": tokens[1:], "weights": [1.0] * (len(tokens) - 1)},
    )


BATCHES = [[datum([5 + i, 17, 23 + i, 42, 9, 11 + i, 30, 7]) for i in range(3)], [datum([8, 9, 10, 11, 12 + j]) for j in range(2)]]


def steps(client, n: int, offset: int = 0) -> list[float]:
    from tinker import types

    futures = []
    for step in range(n):
        futures.append(client.forward_backward(BATCHES[(step + offset) % 2], "cross_entropy"))
        client.optim_step(types.AdamParams(learning_rate=1e-2))
    return [f.result().metrics["loss:sum"] for f in futures]


@pytest.fixture(scope="module")
def limited(tmp_path_factory):
    from tinkerplug_local import ServiceClient

    client = ServiceClient(checkpoint_dir=tmp_path_factory.mktemp("resident"), device="cpu", max_adapters=1)
    yield client
    client.close()


def test_an_evicted_adapter_comes_back_exactly(limited, service):
    alone = service.create_lora_training_client(MODEL, rank=4, seed=5).result()
    expected_a = steps(alone, 6)
    expected_b = steps(service.create_lora_training_client(MODEL, rank=4, seed=6).result(), 3, 1)

    a = limited.create_lora_training_client(MODEL, rank=4, seed=5).result()
    first = steps(a, 3)
    b = limited.create_lora_training_client(MODEL, rank=4, seed=6).result()  # a goes to disk
    host = a._host
    assert a._offloaded is not None and host.residency.offloads == 1
    assert steps(b, 3, 1) == expected_b
    rest = steps(a, 3, 3)  # a comes back (b goes out), with Adam's moments
    assert b._offloaded is not None and host.residency.restores == 1
    assert first + rest == expected_a  # bit-identical to the uninterrupted run
    trained = [n for n in host.peft.peft_config if n.startswith("adapter")]
    assert len(trained) == 1  # one training adapter in memory, the limit


def test_an_adapter_evicted_between_forward_backward_and_optim_step_keeps_its_gradients(limited, service):
    from tinker import types

    expected = steps(service.create_lora_training_client(MODEL, rank=4, seed=9).result(), 3)
    a = limited.create_lora_training_client(MODEL, rank=4, seed=9).result()
    first = steps(a, 1)
    pending = a.forward_backward(BATCHES[1], "cross_entropy").result().metrics["loss:sum"]
    limited.create_lora_training_client(MODEL, rank=4, seed=10).result()  # a goes to disk with its gradients
    assert a._offloaded is not None
    a.optim_step(types.AdamParams(learning_rate=1e-2)).result()
    assert first + [pending] + steps(a, 1, 2) == expected


def test_checkpoints_and_samplers_of_an_evicted_adapter(limited, tmp_path):
    from tinker import types

    a = limited.create_lora_training_client(MODEL, rank=4, seed=7).result()
    steps(a, 2)
    before = a.save_weights_and_get_sampling_client().result()
    prompt = types.ModelInput.from_ints([5, 17, 23, 42])
    want = before.compute_logprobs(prompt).result()
    limited.create_lora_training_client(MODEL, rank=4, seed=8).result()  # a goes to disk
    assert a._offloaded is not None
    path = a.save_state("back").result().path  # brought back to be saved
    again = limited.create_training_client_from_state_with_optimizer(path).result()
    assert again.save_weights_and_get_sampling_client().result().compute_logprobs(prompt).result() == pytest.approx(want, abs=1e-6)


def test_max_adapters_must_not_be_negative(tmp_path):
    from tinkerplug_local import ServiceClient

    with pytest.raises(ValueError, match="max_adapters must be >= 0"):
        ServiceClient(checkpoint_dir=tmp_path, max_adapters=-1)


def test_lanes_take_turns_and_keep_their_order():
    """Fair scheduling: one lane's (one key's) long queue does not hold up another's next job."""
    import threading

    from tinkerplug_local.worker import Worker

    worker, order, gate = Worker("lanes-test"), [], threading.Event()
    worker.submit(lambda: gate.wait(30))
    flood = [worker.submit(lambda i=i: order.append(("a", i)), lane="a") for i in range(5)]
    late = worker.submit(lambda: order.append(("b", 0)), lane="b")
    plain = worker.submit(lambda: order.append(("-", 0)))  # no lane: one more turn-taker
    gate.set()
    for future in [*flood, late, plain]:
        future.result(timeout=30)
    assert order.index(("b", 0)) == 1 and order.index(("-", 0)) == 2
    assert [x for x in order if x[0] == "a"] == [("a", i) for i in range(5)]
    worker.close()
