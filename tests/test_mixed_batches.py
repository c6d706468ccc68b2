"""Mixed-adapter batches: requests of different lanes (``tinkerplug serve``'s keys) queued at
the same time run as one batch, each row with its own LoRA, and each client's results and
weights equal running alone (the local backend in process; serve sets the lanes)."""

from __future__ import annotations

import threading

import pytest

MODEL = "tiny-chat"


def datum(tokens: list[int], weights: list[float] | None = None):
    from tinker import types

    return types.Datum(
        model_input=types.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={"target_tokens": tokens[1:], "weights": weights or [1.0] * (len(tokens) - 1)},
    )


# Client A's datums differ in length (packed rows), B's are equal (one plain batch).
DATA_A = [datum([5 + i, 17, 23 + i, 42, 9, 11 + i, 30, 7][: 5 + i]) for i in range(4)]
DATA_B = [datum([8, 9, 10, 11 + j, 12, 40 + j]) for j in range(3)]


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    from tinkerplug_local import ServiceClient

    client = ServiceClient(checkpoint_dir=tmp_path_factory.mktemp("mixed"), device="cpu", mixed_batches=True)
    yield client
    client.close()


def client(service, lane: str | None, rank: int, seed: int, **options):
    training = service.create_lora_training_client(MODEL, rank=rank, seed=seed, **options).result()
    training.lane = lane
    return training


def weights(training, grads: bool = False) -> dict:
    """The adapter's tensors (or their gradients), by name without the adapter's name."""
    def run() -> dict:
        return {n.replace(f".{training._adapter}.", "."): (p.grad if grads else p).detach().clone()
                for n, p in training._host.adapter_params(training._adapter)}

    return training._host.worker.submit(run).result()


def gated(host):
    """Hold the worker until the returned event is set, so that requests queue up together."""
    release = threading.Event()
    host.worker.submit(lambda: release.wait(60))
    return release


def steps(training, data, n: int) -> list:
    """``n`` pipelined steps submitted at once: forward_backward, optim_step, ..."""
    from tinker import types

    futures = []
    for _ in range(n):
        futures.append(training.forward_backward(data, "cross_entropy"))
        training.optim_step(types.AdamParams(learning_rate=1e-2))
    return futures


def assert_same_results(got, want) -> None:
    import numpy as np

    assert got.metrics["loss:sum"] == pytest.approx(want.metrics["loss:sum"], rel=1e-5)
    for g, w in zip(got.loss_fn_outputs, want.loss_fn_outputs):
        np.testing.assert_allclose(g["logprobs"].to_numpy(), w["logprobs"].to_numpy(), rtol=1e-5, atol=1e-5)


def assert_same_weights(got: dict, want: dict, atol: float = 1e-6) -> None:
    import torch

    assert got.keys() == want.keys()
    for name in want:
        torch.testing.assert_close(got[name], want[name], rtol=1e-5, atol=atol)


@pytest.mark.parametrize("rank_b", [4, 8])
def test_two_keys_train_in_one_batch_as_if_alone(mixed, service, rank_b):
    """Two keys' forward_backward queued together merge; losses, logprobs and the weights after
    three pipelined steps equal solo runs (another rank merges too: each adapter has its rows)."""
    alone_a, alone_b = client(service, None, 4, 1), client(service, None, rank_b, 2)
    want_a = [f.result() for f in steps(alone_a, DATA_A, 3)]
    want_b = [f.result() for f in steps(alone_b, DATA_B, 3)]

    a, b = client(mixed, "a", 4, 1), client(mixed, "b", rank_b, 2)
    host = a._host
    before = (host.mixed_runs, host.worker.batched_jobs)
    release = gated(host)
    got_a, got_b = steps(a, DATA_A, 3), steps(b, DATA_B, 3)
    release.set()
    for got, want in zip(got_a + got_b, want_a + want_b):
        assert_same_results(got.result(), want)
    assert host.mixed_runs - before[0] == 3  # each step's two forward_backwards ran as one batch
    assert host.worker.batched_jobs - before[1] >= 6
    # Adam divides by the gradient's own scale: an element whose gradient is near 0 and rounds
    # differently moves by up to the learning rate (1e-2); the gradients are compared tightly
    # in the next test, the weights here to a tenth of one step.
    assert_same_weights(weights(a), weights(alone_a), atol=1e-3)
    assert_same_weights(weights(b), weights(alone_b), atol=1e-3)


def test_each_adapter_gets_exactly_its_own_gradient(mixed, service):
    import torch

    alone = [client(service, None, 4, 31), client(service, None, 8, 32)]
    for training, data in zip(alone, (DATA_A, DATA_B)):
        training.forward_backward(data, "cross_entropy").result()
    a, b = client(mixed, "a", 4, 31), client(mixed, "b", 8, 32)
    runs = a._host.mixed_runs
    release = gated(a._host)
    futures = [a.forward_backward(DATA_A, "cross_entropy"), b.forward_backward(DATA_B, "cross_entropy")]
    release.set()
    [f.result() for f in futures]
    assert a._host.mixed_runs == runs + 1
    for got, want in ((weights(a, grads=True), weights(alone[0], grads=True)), (weights(b, grads=True), weights(alone[1], grads=True))):
        scale = max(float(g.abs().max()) for g in want.values())
        assert scale > 0
        assert_same_weights(got, want, atol=1e-6 * scale)


def test_a_request_failing_mid_batch_leaves_other_keys_adapters_alone(tmp_path, service):
    """A merged batch that fails part way (here b's loss raises after b's first microbatch has
    run its backward, adding to every adapter's gradients): a's request still gets its solo
    result and exactly its solo gradients, b gets the error and keeps no partial gradient."""
    from tinkerplug_local import ServiceClient

    alone = client(service, None, 4, 51)
    want = alone.forward_backward(DATA_A, "cross_entropy").result()
    small = ServiceClient(checkpoint_dir=tmp_path, device="cpu", mixed_batches=True, microbatch_tokens=8)
    try:
        a, b = client(small, "a", 4, 51), client(small, "b", 4, 52)
        b._loss_of_datum = failing_after_first(b._loss_of_datum)
        runs = a._host.mixed_runs
        release = gated(a._host)
        futures = [a.forward_backward(DATA_A, "cross_entropy"), b.forward_backward(DATA_B, "cross_entropy")]
        release.set()
        assert_same_results(futures[0].result(), want)
        with pytest.raises(RuntimeError, match="b's loss failed"):
            futures[1].result()
        assert a._host.mixed_runs == runs + 1
        got, solo = weights(a, grads=True), weights(alone, grads=True)
        assert_same_weights(got, solo, atol=1e-6 * max(float(g.abs().max()) for g in solo.values()))
        assert a._host.worker.submit(lambda: [p.grad for p in b._params()]).result() == [None] * len(b._params())
    finally:
        small.close()


def failing_after_first(loss_of_datum):
    """``TrainingClient._loss_of_datum`` whose losses raise from their second datum on."""
    calls = []

    def make(data, loss_fn, config):
        loss_of = loss_of_datum(data, loss_fn, config)

        def failing(index, logprobs):
            calls.append(index)
            if len(calls) > 1:
                raise RuntimeError("b's loss failed")
            return loss_of(index, logprobs)

        return failing

    return make


def test_forward_only_merges_and_touches_no_weights(mixed, service):
    a, b = client(mixed, "a", 4, 3), client(mixed, "b", 4, 4)
    before_a, before_b, runs = weights(a), weights(b), a._host.mixed_runs
    want = [client(service, None, 4, seed).forward(data, "cross_entropy").result() for seed, data in ((3, DATA_A), (4, DATA_B))]
    release = gated(a._host)
    got = [a.forward(DATA_A, "cross_entropy"), b.forward(DATA_B, "cross_entropy")]
    release.set()
    for g, w in zip(got, want):
        assert_same_results(g.result(), w)
    assert a._host.mixed_runs == runs + 1
    assert_same_weights(weights(a), before_a)
    assert_same_weights(weights(b), before_b)


def test_a_custom_loss_runs_alone_beside_a_mergeable_request(mixed, service):
    """A request whose loss cannot be batched (a Python custom loss) is not merged; both run."""
    import torch

    def loss_fn(data, logprobs):
        return sum(-lp.sum() for lp in logprobs), {}

    want_a = client(service, None, 4, 5).forward_backward_custom(DATA_A, loss_fn).result()
    want_b = client(service, None, 4, 6).forward_backward(DATA_B, "cross_entropy").result()
    a, b = client(mixed, "a", 4, 5), client(mixed, "b", 4, 6)
    runs = a._host.mixed_runs
    release = gated(a._host)
    got_a, got_b = a.forward_backward_custom(DATA_A, loss_fn), b.forward_backward(DATA_B, "cross_entropy")
    release.set()
    assert got_a.result().metrics["loss:sum"] == pytest.approx(want_a.metrics["loss:sum"], rel=1e-5)
    assert_same_results(got_b.result(), want_b)
    assert a._host.mixed_runs == runs
    assert torch.isfinite(torch.tensor(got_a.result().metrics["loss:sum"]))


def test_one_lane_keeps_its_order_and_does_not_starve_another(mixed, service):
    """Only each lane's head request joins a batch: a's pipelined steps run in order (their
    losses are a solo run's), and b's one step runs beside a's first, not after a's queue."""
    from tinker import types

    want = [f.result().metrics["loss:sum"] for f in steps(client(service, None, 4, 7), DATA_A, 4)]
    a, b = client(mixed, "a", 4, 7), client(mixed, "b", 4, 8)
    release, finished = gated(a._host), []
    flood = steps(a, DATA_A, 4)
    late = b.forward_backward(DATA_B, "cross_entropy")
    optim = b.optim_step(types.AdamParams(learning_rate=1e-2))
    for name, future in [("b", optim)] + [(f"a{i}", f) for i, f in enumerate(flood)]:
        future._future.add_done_callback(lambda _, name=name: finished.append(name))
    release.set()
    flood[-1].result()
    assert finished.index("b") < finished.index("a1")  # b's step ran beside a's first, not after a's queue
    assert [f.result().metrics["loss:sum"] for f in flood] == pytest.approx(want, rel=1e-5)
    assert late.result().metrics["loss:sum"] > 0


def test_sampling_of_two_adapters_shares_a_decode_batch(mixed, service):
    """Greedy samples of two adapters' snapshots queued together: one generation batch, the
    tokens of each alone."""
    from tinker import types

    params = types.SamplingParams(max_tokens=12, temperature=0.0)
    prompts = [types.ModelInput.from_ints([5, 17, 23, 42]), types.ModelInput.from_ints([8, 9, 10])]

    def trained(svc, lane, seed):
        training = client(svc, lane, 4, seed)
        for f in steps(training, DATA_A if seed % 2 else DATA_B, 2):
            f.result()
        return training.save_weights_and_get_sampling_client().result()

    want = [trained(service, None, seed).sample(p, 2, params).result() for seed, p in zip((11, 12), prompts)]
    samplers = [trained(mixed, lane, seed) for lane, seed in (("a", 11), ("b", 12))]
    host = samplers[0]._host
    before = host.mixed_samples
    release = gated(host)
    got = [s.sample(p, 2, params) for s, p in zip(samplers, prompts)]
    release.set()
    for g, w in zip(got, want):
        assert [s.tokens for s in g.result().sequences] == [s.tokens for s in w.sequences]
    assert host.mixed_samples == before + 1


def test_serve_merges_two_keys_and_counts_it_in_metrics(tmp_path, service):
    """Over HTTP with the SDK: alice's and bob's forward_backward queued together run as one
    batch (``/metrics`` counts it), each with the loss of its solo run."""
    import time

    from test_serve_team import ALICE, BOB, ROOT, TeamServer, keyring

    want = [client(service, None, 4, seed).forward_backward(data, "cross_entropy").result()
            for seed, data in ((21, DATA_A), (22, DATA_B))]
    server = TeamServer(tmp_path / "checkpoints", keyring(tmp_path), mixed_batches=True, compute_threads=1)
    try:
        clients = [server.sdk(key).create_lora_training_client(MODEL, rank=4, seed=seed).result()
                   for key, seed in ((ALICE, 21), (BOB, 22))]
        release = gated(server.state.service.hosts()[0])
        futures = [c.forward_backward(data, "cross_entropy") for c, data in zip(clients, (DATA_A, DATA_B))]
        deadline = time.monotonic() + 30
        while sum(server.state.futures.queued().values()) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # the SDK sends from its own thread
        release.set()
        for got, expected in zip(futures, want):
            assert_same_results(got.result(), expected)
        text = server.call("GET", "/metrics", ROOT).text
        assert 'tinkerplug_mixed_batches_total{base_model="tiny-chat"} 1' in text
        assert 'tinkerplug_mixed_requests_total{base_model="tiny-chat"} 2' in text
        busy = [line for line in text.splitlines() if line.startswith('tinkerplug_worker_busy_seconds_total{base_model="tiny-chat"}')]
        assert len(busy) == 1 and float(busy[0].split()[-1]) > 0
    finally:
        server.stop()


@pytest.fixture(scope="module")
def side_by_side(tmp_path_factory):
    from tinkerplug_local import ServiceClient

    client = ServiceClient(checkpoint_dir=tmp_path_factory.mktemp("side"), device="cpu", mixed_batches=True,
                           compute_threads=2)
    yield client
    client.close()


def test_two_keys_run_side_by_side_as_if_alone(side_by_side, service):
    """With two compute threads, two keys' pipelined steps run at the same time, one thread
    each; losses, logprobs and weights equal solo runs, and each key's order is kept: a sampler
    snapshot (which may run beside the other key's steps) holds the weights of the steps before it."""
    want_a = [f.result() for f in steps(client(service, None, 4, 41), DATA_A, 3)]
    want_b = [f.result() for f in steps(client(service, None, 8, 42), DATA_B, 3)]
    a, b = client(side_by_side, "a", 4, 41), client(side_by_side, "b", 8, 42)
    host = a._host
    assert host.shared and host.worker.threads == 2
    before = host.worker.side_by_side
    release = gated(host)
    got_a, got_b = steps(a, DATA_A, 3), steps(b, DATA_B, 3)
    snapshots = [a.save_weights_and_get_sampling_client(), b.save_weights_and_get_sampling_client()]
    steps(a, DATA_A, 1)  # after the snapshot (which runs beside b's steps): it must not see this one
    release.set()
    for got, want in zip(got_a + got_b, want_a + want_b):
        assert_same_results(got.result(), want)
    assert host.worker.side_by_side > before
    solo_a, solo_b = client(service, None, 4, 41), client(service, None, 8, 42)
    for training, data in ((solo_a, DATA_A), (solo_b, DATA_B)):
        [f.result() for f in steps(training, data, 3)]
    for snapshot, solo in zip(snapshots, (solo_a, solo_b)):
        assert_same_weights(snapshot_tensors(snapshot.result()), weights(solo), atol=1e-3)  # as in the merged test above
    assert_same_weights(weights(b), weights(solo_b), atol=1e-3)
    [f.result() for f in steps(solo_a, DATA_A, 1)]
    assert_same_weights(weights(a), weights(solo_a), atol=1e-3)


def snapshot_tensors(sampler) -> dict:
    """A sampler snapshot's tensors, named as ``weights`` names them."""
    from tinkerplug_local.residency import SLOT

    return {n.replace(f".{SLOT}.", "."): t for n, t in sampler._host._snapshots[sampler._adapter].tensors.items()}


def test_compute_threads_overlap_only_shared_jobs_of_different_lanes():
    """The worker's schedule with two threads, on jobs that record when they ran: shared jobs of
    different lanes overlap; one lane's jobs never overlap and keep their order; a job that is
    not shared overlaps nothing, and a stream of shared jobs does not starve it."""
    import time

    from tinkerplug_local.worker import Worker

    worker = Worker("test-threads", threads=2)
    spans: dict[str, tuple[float, float]] = {}

    def job(name: str, seconds: float = 0.05):
        def run() -> None:
            start = time.perf_counter()
            time.sleep(seconds)
            spans[name] = (start, time.perf_counter())
        return run

    release = threading.Event()
    worker.submit(release.wait)  # hold one thread while everything queues
    futures = [worker.submit(job(f"a{i}"), lane="a", shared=True) for i in range(3)]
    futures += [worker.submit(job(f"b{i}"), lane="b", shared=True) for i in range(3)]
    futures.append(worker.submit(job("solo"), lane="c"))
    futures += [worker.submit(job(f"d{i}"), lane="d", shared=True) for i in range(3)]
    release.set()
    [f.result(timeout=30) for f in futures]
    worker.close()

    def overlap(x: str, y: str) -> bool:
        return spans[x][0] < spans[y][1] and spans[y][0] < spans[x][1]

    for lane in "abd":
        names = [f"{lane}{i}" for i in range(3)]
        assert [spans[n][0] for n in names] == sorted(spans[n][0] for n in names)
        assert not any(overlap(x, y) for x in names for y in names if x < y)
    assert any(overlap(f"a{i}", f"b{j}") for i in range(3) for j in range(3))
    assert not any(overlap("solo", other) for other in spans if other != "solo")
    assert spans["solo"][0] < max(spans[f"d{i}"][0] for i in range(3))  # its turn came before d's last


def test_compute_threads_leave_other_threads_torch_threads_alone(side_by_side):
    """The compute threads' share of torch's threads is theirs: a thread started later (another
    client's worker, a test's in-process run) still gets the process's count."""
    import torch

    from tinkerplug_local.host import _torch_threads

    host = client(side_by_side, "a", 4, 51)._host
    assert host.worker.threads == 2
    inside = host.worker.submit(torch.get_num_threads, lane="x").result()
    seen = []
    later = threading.Thread(target=lambda: seen.append(torch.get_num_threads()))
    later.start()
    later.join()
    assert seen == [_torch_threads()] == [host._cores]
    assert inside == max(1, host._cores // 2)


def test_a_job_settled_from_outside_while_it_runs_leaves_its_thread_alive():
    """A server shutting down fails the futures it gave up waiting for, running jobs' too; when
    such a job then finishes, its compute thread must go on to the next job."""
    from tinkerplug_local.worker import Worker

    worker = Worker("test-settled", threads=1)
    started, release = threading.Event(), threading.Event()
    running = worker.submit(lambda: (started.set(), release.wait(30)))
    assert started.wait(30)
    running.future().set_exception(RuntimeError("shut down"))
    release.set()
    assert worker.submit(lambda: 42).result(timeout=30) == 42
    worker.close()


def test_a_sample_failing_in_a_shared_batch_fails_only_itself(mixed, monkeypatch):
    """Two keys' samples in one generation batch, one of which fails while generating (past
    the checks at submission): the batch runs again request by request, so the other key
    gets its tokens, those of sampling alone."""
    from tinker import types

    from tinkerplug_local import sample_batches

    params = types.SamplingParams(max_tokens=6, temperature=0.0)
    good, bad = types.ModelInput.from_ints([5, 17, 23]), types.ModelInput.from_ints([7, 7, 7])
    samplers = [client(mixed, lane, 4, seed).save_weights_and_get_sampling_client().result()
                for lane, seed in (("a", 71), ("b", 72))]
    want = samplers[0].sample(good, 1, params).result()
    real = sample_batches._deliver_samples

    def failing(host, items, mixer):
        if any(request.prompt == [7, 7, 7] for request, _ in items):
            raise RuntimeError("generation failed")
        return real(host, items, mixer)

    monkeypatch.setattr(sample_batches, "_deliver_samples", failing)
    release = gated(samplers[0]._host)
    got = [samplers[0].sample(good, 1, params), samplers[1].sample(bad, 1, params)]
    release.set()
    assert [s.tokens for s in got[0].result().sequences] == [s.tokens for s in want.sequences]
    with pytest.raises(RuntimeError, match="generation failed"):
        got[1].result()


def test_a_sampler_dropped_inside_the_queue_code_is_freed_afterwards(mixed):
    """Garbage collection may finalize a sampling client on a thread that is inside the
    worker's queue code (its lock is reentrant): the finalizer must queue nothing from there
    (that corrupted the lanes and killed the compute threads), and the snapshot is freed after."""
    import gc
    import time
    import weakref

    a = client(mixed, "a", 4, 61)
    sampler = a.save_weights_and_get_sampling_client().result()
    host, name, gone = a._host, sampler._adapter, weakref.ref(sampler)
    assert name in host._snapshots
    jobs = host.worker._jobs
    with jobs._cond:  # as if the finalizer ran inside LaneQueue.put on this thread
        lanes = {lane: list(queued) for lane, queued in jobs._lanes.items()}
        del sampler
        gc.collect()
        assert gone() is None
        assert {lane: list(queued) for lane, queued in jobs._lanes.items()} == lanes
    deadline = time.monotonic() + 30
    while name in host._snapshots and time.monotonic() < deadline:
        time.sleep(0.01)
    assert name not in host._snapshots
