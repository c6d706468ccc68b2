"""StableReinforce: the formula against a hand-written computation, the bounded sampling record,
the SDK's provenance layout (cookbook 0.6.1's ``with_sampled_provenance``) in-process and over
``serve``, and every bad provenance refused naming the datum."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from tinker import types

from tinkerplug_local import losses
from tinkerplug_local.stability import StabilityStore

MODEL = "tiny-chat"
DRIVER = Path(__file__).parent / "peer_drivers" / "rl_loop_061_calls.py"


def test_formula_matches_a_hand_written_computation_in_value_and_gradient():
    q = [-1.0, -2.0, -0.3, -0.7, -1.2, -0.4]
    ratios = [0.4, 0.9, 1.0, 1.7, 2.5, 1.2]  # below, inside, inside, inside, above, inside [0.5, 2]
    a = [1.0, -1.0, 0.5, 2.0, 1.0, -0.5]
    sampled = [1.0, 1.0, 1.0, 1.0, 1.0, 0.0]  # the last target is a prompt position: never trained
    lp = torch.tensor([qi + math.log(r) for qi, r in zip(q, ratios)], requires_grad=True)
    inputs = {"sampler_logprobs": torch.tensor(q), "advantages": torch.tensor(a), "sampled": torch.tensor(sampled)}
    loss = losses.stable_reinforce(lp, inputs, losses.STABLE_DEFAULTS)
    loss.backward()
    value, grad = 0.0, []
    for t in range(len(q)):
        r = math.exp(lp[t].item() - q[t])
        keep = sampled[t] and 0.5 <= r <= 2.0
        value -= keep * r * a[t] * lp[t].item()  # the ratio is a constant weight (no gradient through it)
        grad.append(-keep * r * a[t])
    assert loss.item() == pytest.approx(value, rel=1e-6)
    torch.testing.assert_close(lp.grad, torch.tensor(grad), rtol=1e-6, atol=1e-7)
    assert grad[0] == grad[4] == grad[5] == 0.0 and grad[3] != 0.0
    assert losses.resolve_config("stable_reinforce", losses.LOSSES["stable_reinforce"], {"mask_high_threshold": 5}) == {
        "mask_low_threshold": 0.5, "mask_high_threshold": 5.0,
    }
    with pytest.raises(ValueError, match="0 <= mask_low_threshold <= mask_high_threshold"):
        losses.resolve_config("stable_reinforce", losses.LOSSES["stable_reinforce"], {"mask_low_threshold": 3})


def test_the_record_is_bounded_by_age_and_size_and_scoped_to_its_session():
    now = [0.0]
    store = StabilityStore(max_tokens=20, max_age_s=100.0, clock=lambda: now[0])
    store.put("s1", [1, 2, 3, 4], [("a", [5, 6], [-0.1, -0.2]), ("b", [7], [-0.3])])  # 4 + 2 + 1 tokens
    assert store.get("a", "s1") is not None and store.get("a", "s2") is None and store.get("a", None) is None
    now[0] = 90.0
    assert store.get("a", "s1") is not None  # a use restarts its day
    now[0] = 150.0
    assert store.get("b", "s1") is None and store.get("a", "s1") is not None  # b unused for 150 s
    store.put("s1", [9] * 10, [("c", [1] * 5, [0.0] * 5), ("d", [2] * 4, [0.0] * 4)])  # 6 + 15 + 4 > 20
    assert store.get("a", "s1") is None and store.get("c", "s1") is not None and len(store) == 2
    store.put("s2", [1], [("e", [2], [0.0])])
    store.drop("s1")  # its session finished
    assert len(store) == 1 and store.get("e", "s2") is not None and store._tokens == 2


# -- through the local backend --------------------------------------------------------------


@pytest.fixture(scope="module")
def clients(service):
    training = service.create_lora_training_client(MODEL, rank=4, seed=0).result()
    sampler = training.save_weights_and_get_sampling_client(record_stability_info=True).result()
    return training, sampler


PROMPT = types.ModelInput.from_ints([5, 17, 23, 42, 9])


def _datums(sequences, with_provenance: bool = True) -> list[types.Datum]:
    sys.path.insert(0, str(DRIVER.parent))
    from rl_loop_061_calls import group_datums

    rewards = [float(i % 2) for i in range(len(sequences))]
    data = group_datums(PROMPT, sequences, rewards, "stable_reinforce" if with_provenance else "importance_sampling")
    return data


def _grads(client) -> list[torch.Tensor]:
    grads = [p.grad.clone() for p in client._params()]
    for p in client._params():
        p.grad = None
    return grads


def test_on_policy_its_gradient_is_importance_samplings_and_its_value_the_formula(clients):
    training, sampler = clients
    params = types.SamplingParams(max_tokens=8, temperature=1.0, seed=3)
    sequences = sampler.sample(PROMPT, 4, params).result().sequences
    stable = training.forward_backward(_datums(sequences), "stable_reinforce").result()
    got = _grads(training)
    training.forward_backward(_datums(sequences, with_provenance=False), "importance_sampling").result()
    for g, w in zip(got, _grads(training)):  # sampler and learner agree: r = 1, nothing dropped
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-8)
    expected = 0.0
    for out, seq, datum in zip(stable.loss_fn_outputs, sequences, _datums(sequences)):
        lp = out["logprobs"].to_torch()[-len(seq.tokens):]
        ratio = torch.exp(lp - torch.tensor(seq.logprobs))
        expected -= float((ratio * datum.loss_fn_inputs["advantages"].to_torch()[-len(seq.tokens):] * lp).sum())
    assert stable.metrics["loss:sum"] == pytest.approx(expected, rel=1e-5)


def _bad(sequences, index: int, field: str, span: types.PromptProvenanceSpan | types.SampledProvenanceSpan | None) -> types.Datum:
    datum = _datums(sequences)[index]
    spans = {"model_input": list(datum.model_input_spans), "loss_fn_inputs": list(datum.loss_fn_input_spans)}
    spans[field][-1] = span
    return types.Datum(model_input=datum.model_input, loss_fn_inputs=datum.loss_fn_inputs,
                       model_input_spans=spans["model_input"], loss_fn_input_spans=spans["loss_fn_inputs"])


def _cases(sequences, unrecorded):
    n, seq_id = len(sequences[1].tokens), sequences[1].sequence_id
    plain = _datums(sequences, with_provenance=False)[1]
    return [
        (plain, r"datum 1: stable_reinforce needs provenance on every datum"),
        (_bad(sequences, 1, "loss_fn_inputs", types.SampledProvenanceSpan(sequence_id="nope", length=n)),
         r"datum 1: loss_fn_input_spans\[1\] names sequence_id 'nope', which this session has not sampled"),
        (_bad(sequences, 1, "loss_fn_inputs", types.SampledProvenanceSpan(sequence_id=unrecorded, length=n)),
         r"datum 1: loss_fn_input_spans\[1\] names sequence_id '.*', which this session has not sampled with record_stability_info=True"),
        (_bad(sequences, 1, "loss_fn_inputs", types.SampledProvenanceSpan(sequence_id=seq_id, offset=1, length=n)),
         rf"datum 1: loss_fn_input_spans\[1\] covers positions 1..{n} of the sampled tokens of sequence '{seq_id}', which has {n}"),
        (_mismatched(sequences), rf"datum 1: loss_fn_input_spans\[1\]: position {PROMPT.length + n - 2} holds token "
                                 rf"{(sequences[1].tokens[-1] + 1) % 100}, but the sampled tokens of sequence '{seq_id}' has {sequences[1].tokens[-1]} there"),
        (_bad(sequences, 1, "model_input", types.SampledProvenanceSpan(sequence_id=seq_id, length=n - 2)),
         rf"datum 1: model_input_spans cover {PROMPT.length + n - 2} positions, the field has {PROMPT.length + n - 1}"),
    ]


def _mismatched(sequences) -> types.Datum:
    """Datum 1 with its last target changed: its spans claim a token the sequence does not have."""
    datum = _datums(sequences)[1]
    targets = datum.loss_fn_inputs["target_tokens"].tolist()
    targets[-1] = (targets[-1] + 1) % 100
    return types.Datum(model_input=datum.model_input, loss_fn_inputs={**datum.loss_fn_inputs, "target_tokens": targets},
                       model_input_spans=datum.model_input_spans, loss_fn_input_spans=datum.loss_fn_input_spans)


def test_bad_provenance_fails_at_the_call_naming_the_datum_and_the_client_goes_on(clients, service):
    training, sampler = clients
    sequences = sampler.sample(PROMPT, 2, types.SamplingParams(max_tokens=6, temperature=1.0, seed=1)).result().sequences
    plain_sampler = training.save_weights_and_get_sampling_client().result()  # record_stability_info off
    unrecorded = plain_sampler.sample(PROMPT, 1, types.SamplingParams(max_tokens=4, seed=0)).result().sequences[0].sequence_id
    good = _datums(sequences)[0]
    for bad, match in _cases(sequences, unrecorded):
        with pytest.raises(ValueError, match=match):
            training.forward_backward([good, bad], "stable_reinforce")
    assert math.isfinite(training.forward_backward([good], "stable_reinforce").result().metrics["loss:sum"])
    _grads(training)


# -- the SDK loop, in-process and over serve ----------------------------------------------------


def _rewards(stdout: str) -> list[float]:
    return [float(line.split()[-1]) for line in stdout.splitlines() if line.startswith("step ")]


@pytest.mark.slow
def test_cookbook_061_calls_run_in_process_and_over_serve_with_the_same_numbers(tmp_path):
    from conftest import run_cli
    from test_serve import KEY, Server, sdk

    args = ["--steps", "3", "--batch", "4", "--group", "4"]
    local = run_cli("local", "--checkpoint-dir", str(tmp_path / "ck"), "--", sys.executable, str(DRIVER), *args, cwd=tmp_path)
    assert local.returncode == 0, local.stderr[-3000:]
    server = Server(tmp_path / "serve")
    try:
        env = {**os.environ, "TINKER_BASE_URL": server.url, "TINKER_API_KEY": KEY}
        remote = subprocess.run([sys.executable, str(DRIVER), *args], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
        assert remote.returncode == 0, remote.stderr[-3000:]
        assert _rewards(remote.stdout) == _rewards(local.stdout) and len(_rewards(local.stdout)) == 3
        _bad_requests_over_serve(lambda: sdk(server))
        assert server.healthy()
    finally:
        server.stop()


def _bad_requests_over_serve(new_session) -> None:
    """Unknown ids, spans past the sequence, another session's ids: a 400 naming the datum;
    the session goes on."""
    import tinker

    service = new_session()
    training = service.create_lora_training_client(MODEL, rank=4, seed=0).result()
    sampler = training.save_weights_and_get_sampling_client(record_stability_info=True).result()
    sequences = sampler.sample(PROMPT, 2, types.SamplingParams(max_tokens=6, temperature=1.0, seed=1)).result().sequences
    other = service.create_lora_training_client(MODEL, rank=4, seed=0).result()
    n, seq_id = len(sequences[1].tokens), sequences[1].sequence_id
    for bad, match in [
        (_bad(sequences, 1, "loss_fn_inputs", types.SampledProvenanceSpan(sequence_id="nope", length=n)), "names sequence_id 'nope'"),
        (_bad(sequences, 1, "loss_fn_inputs", types.SampledProvenanceSpan(sequence_id=seq_id, offset=2, length=n)), "covers positions 2.."),
        (_datums(sequences, with_provenance=False)[1], "needs provenance on every datum"),
    ]:
        with pytest.raises(tinker.BadRequestError, match=rf"datum 1: .*{match}"):
            training.forward_backward([_datums(sequences)[0], bad], "stable_reinforce").result(timeout=60)
    assert math.isfinite(training.forward_backward(_datums(sequences), "stable_reinforce").result(timeout=60).metrics["loss:sum"])
    assert math.isfinite(other.forward_backward(_datums(sequences), "stable_reinforce").result(timeout=60).metrics["loss:sum"])
    stranger = new_session().create_lora_training_client(MODEL, rank=4, seed=0).result()  # another session's ids are unknown
    with pytest.raises(tinker.BadRequestError, match=r"datum 0: model_input_spans\[0\] names sequence_id"):
        stranger.forward_backward(_datums(sequences), "stable_reinforce").result(timeout=60)


@pytest.fixture(scope="session")
def cookbook_061(tmp_path_factory):
    """tinker-cookbook 0.6.1's source (pip cannot install it: tml-renderers>=0.4.1 is not on
    PyPI; its text-only recipes never import it)."""
    import zipfile

    where = tmp_path_factory.mktemp("cb061")
    got = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "tinker-cookbook==0.6.1", "-d", str(where)],
                         capture_output=True, text=True, timeout=120)
    wheels = list(where.glob("tinker_cookbook-0.6.1-*.whl"))
    if got.returncode != 0 or not wheels:
        pytest.skip(f"tinker-cookbook 0.6.1 cannot be downloaded here: {got.stderr[-300:]}")
    zipfile.ZipFile(wheels[0]).extractall(where / "src")
    return where / "src"


@pytest.mark.slow
def test_cookbook_061_rl_loop_itself_trains_with_stable_reinforce(tmp_path, cookbook_061):
    from conftest import read_jsonl, run_cli

    driver = Path(__file__).parent / "peer_drivers" / "rl_loop_local.py"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(cookbook_061), os.environ.get("PYTHONPATH")]))}
    result = run_cli("local", "--checkpoint-dir", str(tmp_path / "ck"), "--", sys.executable, str(driver), MODEL,
                     str(tmp_path / "log"), "3", "reverse", "3e-3", "4", "4", "stable_reinforce", cwd=tmp_path, env=env)
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = read_jsonl(tmp_path / "log" / "metrics.jsonl")
    assert [m["progress/batch"] for m in metrics] == [0, 1, 2]
    assert all(math.isfinite(m["grad_norm"]) and m["grad_norm"] > 0 for m in metrics if "grad_norm" in m)
