"""The Tinker losses on the local backend: each formula against a hand-written computation of the
docs' definition (values and gradients, ratios inside and outside the clip range), the request
checks, ``forward_backward_custom`` in one pass, and the sampler snapshot."""

from __future__ import annotations

import gc
import math
import threading

import pytest
import torch
from tinker import types

from tinkerplug_local import losses

MODEL = "tiny-chat"
CLIP = {"clip_low_threshold": 0.8, "clip_high_threshold": 1.2}
# Ratios r = exp(lp - q) well below, inside and well above [0.8, 1.2], each with A > 0 and A < 0.
RATIOS = [0.5, 0.9, 1.0, 1.1, 1.5, 0.5, 0.9, 1.5]
ADVANTAGES = [1.0, 1.0, -0.5, -1.0, 2.0, -1.0, 0.7, -2.0]


def _case() -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    q = torch.tensor([-1.0, -2.0, -0.3, -0.7, -1.2, -0.4, -3.0, -0.9])
    lp = (q + torch.log(torch.tensor(RATIOS))).requires_grad_(True)
    inputs = {
        "logprobs": q,
        "advantages": torch.tensor(ADVANTAGES),
        "sequence_ratio_mask": torch.tensor([0.0, 1, 1, 1, 1, 1, 1, 0]),
        "weights": torch.tensor([0.0, 1, 1, 0.5, 1, 1, 2, 1]),
    }
    return lp, inputs


def _by_hand(name: str, lp: list[float], q: list[float], a: list[float], extra: dict) -> tuple[float, list[float]]:
    """The docs' formula, token by token in plain Python, and its derivative by hand."""
    lo, hi, beta = 0.8, 1.2, extra.get("beta", 0.05)
    clip = lambda r: min(max(r, lo), hi)  # noqa: E731
    value, grad = 0.0, []
    if name == "gspo":
        marked = [i for i, m in enumerate(extra["mask"]) if m]
        s = math.exp(sum(lp[i] - q[i] for i in marked) / len(marked))
    for t in range(len(lp)):
        r = math.exp(lp[t] - q[t])
        if name == "importance_sampling":
            value, g = value - r * a[t], -r * a[t]
        elif name in ("ppo", "gspo"):
            r = s if name == "gspo" else r  # GSPO: every token carries the sequence ratio
            unclipped, clipped = r * a[t], clip(r) * a[t]
            value -= min(unclipped, clipped)
            g = -r * a[t] if unclipped <= clipped else 0.0  # the clipped branch is constant
        elif name == "cispo":
            value, g = value - clip(r) * lp[t] * a[t], -clip(r) * a[t]  # no gradient through clip(r)
        elif name == "dro":
            value -= lp[t] * a[t] - 0.5 * beta * (lp[t] - q[t]) ** 2
            g = -(a[t] - beta * (lp[t] - q[t]))
        elif name == "cross_entropy":
            value, g = value - lp[t] * extra["weights"][t], -extra["weights"][t]
        grad.append(g)
    return value, grad


@pytest.mark.parametrize(
    "name, mask",
    [(n, None) for n in ("cross_entropy", "importance_sampling", "ppo", "cispo", "dro")]
    + [("gspo", [0, 1, 1, 1, 1, 1, 1, 0]), ("gspo", [0, 0, 0, 0, 1, 0, 0, 0]), ("gspo", [1, 0, 0, 0, 0, 1, 0, 0])],
)
def test_each_loss_matches_the_docs_formula_in_value_and_gradient(name, mask):
    """GSPO's masks give a sequence ratio inside the clip range (0.94), above it (1.5), below it (0.5)."""
    spec = losses.LOSSES[name]
    lp, inputs = _case()
    if mask is not None:
        inputs["sequence_ratio_mask"] = torch.tensor(mask, dtype=torch.float32)
    config = losses.resolve_config(name, spec, {"beta": 0.3} if name == "dro" else None)
    loss = spec.fn(lp, {k: inputs[k] for k in spec.inputs}, config)
    loss.backward()
    extra = {"beta": 0.3, "mask": inputs["sequence_ratio_mask"].tolist(), "weights": inputs["weights"].tolist()}
    value, grad = _by_hand(name, lp.tolist(), inputs["logprobs"].tolist(), ADVANTAGES, extra)
    assert float(loss.detach()) == pytest.approx(value, rel=1e-5)
    assert lp.grad.tolist() == pytest.approx(grad, rel=1e-5, abs=1e-7)


def test_clipping_changes_gradients_only_where_the_ratio_is_outside_the_range():
    lp, inputs = _case()
    losses.ppo(lp, inputs, CLIP).backward()
    # Outside the range the pessimistic branch is the clipped (constant) one only for r=1.5, A>0 and r=0.5, A<0.
    zero = [i for i, g in enumerate(lp.grad.tolist()) if g == 0]
    assert zero == [4, 5]
    lp2, _ = _case()
    losses.cispo(lp2, inputs, CLIP).backward()
    assert all(g != 0 for g in lp2.grad.tolist())  # CISPO keeps every token's gradient


def test_per_token_clip_bounds_from_the_datum_override_the_config():
    lp, inputs = _case()
    wide = {**inputs, "clip_low_threshold": torch.full((8,), 0.1), "clip_high_threshold": torch.full((8,), 10.0)}
    loss = losses.ppo(lp, wide, CLIP)  # nothing clipped: PPO is importance sampling
    assert float(loss.detach()) == pytest.approx(float(losses.importance_sampling(lp, inputs, {}).detach()), rel=1e-6)
    mixed = {**inputs, "clip_low_threshold": torch.tensor([0.8] * 5 + [0.1] * 3), "clip_high_threshold": torch.tensor([1.2] * 5 + [10.0] * 3)}
    losses.ppo(lp, mixed, CLIP).backward()
    assert [i for i, g in enumerate(lp.grad.tolist()) if g == 0] == [4]  # r=1.5, A>0 at 4 still clipped; r=0.5, A<0 at 5 no longer


def test_soft_targets_cross_entropy_over_top_k():
    lp = torch.log(torch.tensor([[0.5, 0.3], [0.2, 0.1]])).requires_grad_(True)
    weights = torch.tensor([[0.6, 0.4], [1.0, 0.0]])
    loss = losses.cross_entropy(lp, {"weights": weights}, {})
    loss.backward()
    assert float(loss.detach()) == pytest.approx(-(0.6 * math.log(0.5) + 0.4 * math.log(0.3) + math.log(0.2)))
    assert torch.equal(lp.grad, -weights)


def test_config_checks_name_the_supported_keys_and_losses():
    with pytest.raises(ValueError, match="'clip_epsilon' is not used by 'ppo'; it takes clip_low_threshold, clip_high_threshold"):
        losses.resolve_config("ppo", losses.LOSSES["ppo"], {"clip_epsilon": 0.2})
    with pytest.raises(ValueError, match="'beta' is not used by 'importance_sampling'; it takes no keys"):
        losses.resolve_config("importance_sampling", losses.LOSSES["importance_sampling"], {"beta": 0.1})
    with pytest.raises(ValueError, match="absolute bounds"):
        losses.resolve_config("cispo", losses.LOSSES["cispo"], {"clip_low_threshold": 0.2, "clip_high_threshold": 0.1})
    assert losses.resolve_config("ppo", losses.LOSSES["ppo"], {"clip_high_threshold": 1.28}) == {
        "clip_low_threshold": 0.8, "clip_high_threshold": 1.28,
    }
    with pytest.raises(NotImplementedError, match="is not supported.*supported: cross_entropy, importance_sampling, ppo, cispo, dro, gspo, stable_reinforce, and custom"):
        losses.check_loss_fn("no_such_loss")


# -- through the training client ------------------------------------------------------------


def _rl_datum(tokens: list[int], advantage: float, offset: float = 0.0, mask: bool = False) -> types.Datum:
    n = len(tokens) - 1
    inputs = {
        "target_tokens": tokens[1:],
        "logprobs": types.TensorData.from_torch(torch.full((n,), -2.0 + offset)),
        "advantages": types.TensorData.from_torch(torch.tensor([0.0] + [advantage] * (n - 1))),
    }
    if mask:
        inputs["sequence_ratio_mask"] = types.TensorData.from_torch(torch.tensor([0.0] + [1.0] * (n - 1)))
    return types.Datum(model_input=types.ModelInput.from_ints(tokens[:-1]), loss_fn_inputs=inputs)


def _grads(client) -> list[torch.Tensor]:
    grads = [p.grad.clone() for p in client._params()]
    for p in client._params():
        p.grad = None
    return grads


@pytest.fixture(scope="module")
def client(service):
    return service.create_lora_training_client(MODEL, rank=4, seed=0).result()


@pytest.mark.parametrize("name", ["importance_sampling", "ppo", "cispo", "dro", "gspo"])
def test_rl_losses_through_the_client_match_the_formula_on_its_logprobs(client, name):
    data = [_rl_datum([5, 17, 23, 42, 9, 11], 1.0, mask=True), _rl_datum([7, 8, 30, 31], -0.5, offset=1.0, mask=True)]
    spec = losses.LOSSES[name]
    inputs = [{k: d.loss_fn_inputs[k].to_torch().float() for k in spec.inputs} for d in data]
    result = client.forward_backward(data, name).result()
    got = _grads(client)
    expected = 0.0
    for out, inp in zip(result.loss_fn_outputs, inputs):
        expected += float(spec.fn(out["logprobs"].to_torch(), inp, losses.resolve_config(name, spec, None)))
    assert result.metrics["loss:sum"] == pytest.approx(expected, rel=1e-5)
    assert any(float(g.abs().sum()) > 0 for g in got)


def test_custom_loss_is_one_pass_and_gives_the_builtin_losss_gradient(client, monkeypatch):
    import tinkerplug_local.custom as custom

    data = [_rl_datum([5, 17, 23, 42, 9, 11], 1.0), _rl_datum([7, 8, 30, 31], -0.5, offset=1.0)]
    builtin = client.forward_backward(data, "importance_sampling").result()
    want = _grads(client)

    def is_loss(batch, logprobs_list):
        assert all(lp.requires_grad and lp.is_leaf for lp in logprobs_list)
        total = sum(-(torch.exp(lp - d.loss_fn_inputs["logprobs"].to_torch()) * d.loss_fn_inputs["advantages"].to_torch()).sum()
                    for d, lp in zip(batch, logprobs_list))
        return total, {"custom:metric": 1.0}

    calls = []
    original = client._logprobs
    monkeypatch.setattr(client, "_logprobs", lambda data, grad: calls.append(grad) or original(data, grad))
    for one_pass_max in (custom.ONE_PASS_MAX_TOKENS, 0):  # one pass, then the SDK's two
        monkeypatch.setattr(custom, "ONE_PASS_MAX_TOKENS", one_pass_max)
        calls.clear()
        result = client.forward_backward_custom(data, is_loss).result()
        assert calls == ([True] if one_pass_max else [False, True])
        assert result.metrics["loss:sum"] == pytest.approx(builtin.metrics["loss:sum"], rel=1e-5)
        assert result.metrics["custom:metric"] == 1.0 and "surrogate_loss:sum" in result.metrics
        for g, w in zip(_grads(client), want):
            torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda i: i.pop("advantages"), r"datum 1: ppo needs loss_fn_inputs\['advantages'\]"),
        (lambda i: i.update(logprobs=[0.0, 0.0]), r"datum 1: loss_fn_inputs\['logprobs'\] has shape \[2\], target_tokens has \[3\]"),
        (lambda i: i.update(advantages=[0.0, float("nan"), 1.0]), r"datum 1: loss_fn_inputs\['advantages'\] is not finite at position 1"),
        (lambda i: i.update(target_tokens=[1, 2]), r"datum 1: target_tokens has shape \[2\], model_input has 3 tokens"),
        (lambda i: i.update(target_tokens=[1, 99999, 2]), r"datum 1: target_tokens has token id 99999 at position 1"),
    ],
)
def test_bad_datums_fail_at_the_call_naming_datum_and_key_and_the_client_goes_on(client, mutate, match):
    good = _rl_datum([7, 8, 30, 31], 1.0)
    inputs = {k: v.tolist() for k, v in ((k, v.to_torch()) for k, v in good.loss_fn_inputs.items())}
    mutate(inputs)
    bad = types.Datum(model_input=good.model_input, loss_fn_inputs=inputs)
    with pytest.raises(ValueError, match=match):
        client.forward_backward([good, bad], "ppo")
    with pytest.raises(ValueError, match="'clip_ratio' is not used by 'ppo'"):
        client.forward_backward([good], "ppo", {"clip_ratio": 0.2})
    assert math.isfinite(client.forward([good], "ppo").result().metrics["loss:sum"])


def test_sampler_snapshot_is_frozen_and_named_saves_land_on_disk(tmp_path):
    from pathlib import Path

    from tinkerplug_local import ServiceClient

    service = ServiceClient(checkpoint_dir=tmp_path)  # its own host: only this test's adapters
    trainer = service.create_lora_training_client(MODEL, rank=4, seed=1).result()
    prompt = types.ModelInput.from_ints([5, 17, 23, 42, 9])
    sft = [types.Datum(model_input=prompt, loss_fn_inputs={"target_tokens": [17, 23, 42, 9, 11], "weights": [1.0] * 5})]
    sampler = trainer.save_weights_and_get_sampling_client().result()
    before = sampler.compute_logprobs(prompt).result()
    assert sampler.model_path is None  # in memory: nothing written
    for _ in range(3):
        trainer.forward_backward(sft, "cross_entropy")
        trainer.optim_step(types.AdamParams(learning_rate=5e-2))
    assert sampler.compute_logprobs(prompt).result() == before  # training went on; the snapshot did not
    host = trainer._host
    adapters = set(host.peft.peft_config)  # the trainer's and one sampler slot
    del sampler
    gc.collect()  # its tensors are dropped; the slot stays for the next snapshot
    after = trainer.save_weights_and_get_sampling_client("named").result()
    kept = [trainer.save_weights_and_get_sampling_client().result() for _ in range(5)]  # held, as serve holds them
    assert [s.compute_logprobs(prompt).result() for s in kept[:1]] != [before]
    assert set(host.peft.peft_config) == adapters  # snapshots are tensors; one slot serves them in turn
    assert Path(after.model_path, "adapter_config.json").is_file()
    changed = after.compute_logprobs(prompt).result()
    assert changed != before
    reloaded = service.create_sampling_client(model_path=after.model_path).result()
    assert reloaded.compute_logprobs(prompt).result() == pytest.approx(changed, abs=1e-5)
    service.close()


def test_held_snapshots_share_sampler_slots_exactly(tmp_path):
    """Snapshots taken at three steps, each scored alone (one slot, copied into in turn) and
    then all in one batch (three slots): every score is the one taken with the snapshot."""
    from tinkerplug_local import ServiceClient

    service = ServiceClient(checkpoint_dir=tmp_path)
    trainer = service.create_lora_training_client(MODEL, rank=4, seed=2).result()
    prompt = types.ModelInput.from_ints([5, 17, 23, 42, 9])
    sft = [types.Datum(model_input=prompt, loss_fn_inputs={"target_tokens": [17, 23, 42, 9, 11], "weights": [1.0] * 5})]
    samplers, taken = [], []
    for _ in range(3):
        samplers.append(trainer.save_weights_and_get_sampling_client().result())
        taken.append(samplers[-1].compute_logprobs(prompt).result())
        trainer.forward_backward(sft, "cross_entropy")
        trainer.optim_step(types.AdamParams(learning_rate=5e-2)).result()
    assert len({tuple(t[1:]) for t in taken}) == 3  # the steps moved the weights
    host = trainer._host
    assert [s.compute_logprobs(prompt).result() for s in reversed(samplers)] == taken[::-1]
    loads = host.slot_loads
    gate = threading.Event()
    host.worker.submit(gate.wait)  # hold the worker: the three requests queue into one batch
    together = [s.compute_logprobs(prompt) for s in samplers]
    gate.set()
    assert [f.result() for f in together] == taken
    assert host.slot_loads > loads and len([a for a in host.peft.peft_config if a.startswith("slot")]) == 3
    service.close()


def test_sampling_prompt_logprobs_top_k_and_groups(service):
    sampler = service.create_sampling_client(base_model=MODEL).result()
    prompt = types.ModelInput.from_ints([5, 17, 23, 42, 9])
    response = sampler.sample(
        prompt, 4, types.SamplingParams(max_tokens=6, seed=3), include_prompt_logprobs=True, topk_prompt_logprobs=3
    ).result()
    assert len(response.sequences) == 4
    assert all(len(s.logprobs) == len(s.tokens) > 0 for s in response.sequences)
    assert response.prompt_logprobs[0] is None
    assert response.prompt_logprobs == pytest.approx(sampler.compute_logprobs(prompt).result(), abs=1e-6)
    top = response.topk_prompt_logprobs
    assert top[0] is None and len(top) == prompt.length
    for position, (row, token) in enumerate(zip(top[1:], prompt.to_ints()[1:]), start=1):
        assert len(row) == 3 and all(isinstance(t, int) and isinstance(v, float) for t, v in row)
        assert [v for _, v in row] == sorted((v for _, v in row), reverse=True)
        assert row[0][1] >= response.prompt_logprobs[position] - 1e-6
    last = sampler.sample(prompt, 1, types.SamplingParams(max_tokens=2), include_prompt_logprobs=True,
                          prompt_logprobs_last_n=2).result()
    assert last.prompt_logprobs[:3] == [None] * 3 and None not in last.prompt_logprobs[3:]


def test_soft_targets_through_the_client(client):
    """Off-policy distillation's (N, K) targets and weights: logprobs come back (N, K)."""
    tokens = [5, 17, 23, 42, 9]
    top = [[t, (t + 3) % 500, (t + 7) % 500] for t in tokens[1:]]
    weights = [[0.7, 0.2, 0.1]] * len(top)
    datum = types.Datum(model_input=types.ModelInput.from_ints(tokens[:-1]), loss_fn_inputs={
        "target_tokens": types.TensorData.from_torch(torch.tensor(top)),
        "weights": types.TensorData.from_torch(torch.tensor(weights)),
    })
    result = client.forward([datum], "cross_entropy").result()
    lp = result.loss_fn_outputs[0]["logprobs"].to_torch()
    assert tuple(lp.shape) == (4, 3)
    assert result.metrics["loss:sum"] == pytest.approx(float(-(lp * torch.tensor(weights)).sum()), rel=1e-5)
    with pytest.raises(ValueError, match=r"datum 0: ppo takes one target per position"):
        client.forward([datum], "ppo")


def test_custom_loss_errors_leave_no_gradient_and_the_client_usable(client):
    data = [_rl_datum([5, 17, 23, 42, 9, 11], 1.0)]

    def broken(batch, logprobs_list):
        raise RuntimeError("user bug")

    with pytest.raises(RuntimeError, match="user bug"):
        client.forward_backward_custom(data, broken).result()
    with pytest.raises(TypeError, match=r"must return \(loss, metrics\)"):
        client.forward_backward_custom(data, lambda batch, lps: sum(lp.sum() for lp in lps)).result()
    assert all(p.grad is None for p in client._params())  # nothing half-applied
    with pytest.raises(NotImplementedError, match="callable loss_fn"):
        client.forward_backward_custom(data, "dpo")
    with pytest.raises(ValueError, match="No data provided"):
        client.forward_backward_custom([], broken)
    result = client.forward_backward_custom(data, lambda batch, lps: (-lps[0].sum(), {})).result()
    assert result.metrics["loss:sum"] > 0
    _grads(client)
