"""The local backend against the SDK's contract, checked with independent computations."""

from __future__ import annotations

import asyncio
import math

import pytest
import torch
from tinker import types

from tinkerplug_local.losses import check_loss_fn


def _datum(tokens: list[int], weights: list[float]) -> types.Datum:
    return types.Datum(
        model_input=types.ModelInput.from_ints(tokens[:-1]),
        loss_fn_inputs={"target_tokens": tokens[1:], "weights": weights},
    )


def _batch() -> list[types.Datum]:
    return [
        _datum([5, 17, 23, 42, 9, 11, 30], [0, 0, 1, 1, 1, 0.5]),
        _datum([7, 8, 9, 10], [0, 1, 1]),
    ]


def test_cross_entropy_is_a_weighted_sum_matching_a_plain_forward(service):
    client = service.create_lora_training_client("tiny-chat", rank=4, seed=1).result()
    data = _batch()
    out = client.forward(data, "cross_entropy").result()
    # Independent: the base model directly (a fresh LoRA has B = 0, so it equals the base).
    from transformers import AutoModelForCausalLM

    from tinkerplug.models import shipped_model_dir

    model = AutoModelForCausalLM.from_pretrained(shipped_model_dir("tiny-chat"))
    expected_sum = 0.0
    for datum, output in zip(data, out.loss_fn_outputs):
        ids = torch.tensor([datum.model_input.to_ints()])
        with torch.no_grad():
            logprobs = torch.log_softmax(model(input_ids=ids).logits[0].float(), -1)
        targets = datum.loss_fn_inputs["target_tokens"].to_torch()
        weights = datum.loss_fn_inputs["weights"].to_torch()
        lp = logprobs.gather(-1, targets[:, None])[:, 0]
        assert torch.allclose(output["logprobs"].to_torch(), lp, atol=1e-4)
        expected_sum += float(-(lp * weights).sum())
    assert math.isclose(out.metrics["loss:sum"], expected_sum, rel_tol=1e-4)


def test_optim_step_is_adamw_with_clipping(service):
    client = service.create_lora_training_client("tiny-chat", rank=4, seed=2).result()
    params = [p for _, p in client._host.adapter_params(client._adapter)]
    before = [p.detach().clone() for p in params]
    client.forward_backward(_batch(), "cross_entropy").result()
    grads = [p.grad.detach().clone() for p in params]
    adam = types.AdamParams(learning_rate=1e-2, beta1=0.9, beta2=0.95, eps=1e-8, weight_decay=0.1, grad_clip_norm=0.05)
    response = client.optim_step(adam).result()
    norm = torch.sqrt(sum((g**2).sum() for g in grads))
    assert math.isclose(response.metrics["grad_norm"], float(norm), rel_tol=1e-4)
    scale = min(1.0, 0.05 / (float(norm) + 1e-6))
    for p0, g, p in zip(before, grads, params):
        g = g * scale
        m = (1 - 0.9) * g
        v = (1 - 0.95) * g * g
        expected = p0 * (1 - 1e-2 * 0.1) - 1e-2 * (m / (1 - 0.9)) / (torch.sqrt(v / (1 - 0.95)) + 1e-8)
        assert torch.allclose(p.detach(), expected, atol=1e-6)
        assert p.grad is None  # gradients are cleared after the step


def test_state_roundtrip_and_frozen_sampler_snapshot(service):
    client = service.create_lora_training_client("tiny-chat", rank=4, seed=3).result()
    adam = types.AdamParams(learning_rate=5e-2)
    for _ in range(2):
        client.forward_backward(_batch(), "cross_entropy")
        client.optim_step(adam)
    state = client.save_state("s").result().path
    sampler = client.save_weights_and_get_sampling_client("snap").result()
    prompt = types.ModelInput.from_ints([5, 17, 23, 42])
    greedy = types.SamplingParams(max_tokens=6, temperature=0, stop=[])
    first = sampler.sample(prompt, 1, greedy).result().sequences[0].tokens
    logprobs_before = client.forward(_batch(), "cross_entropy").result()
    # Train on: the snapshot must not move, a restored client must match the trained one exactly.
    restored = service.create_training_client_from_state_with_optimizer(state).result()
    client.forward_backward(_batch(), "cross_entropy")
    client.optim_step(adam).result()
    assert sampler.sample(prompt, 1, greedy).result().sequences[0].tokens == first
    restored_out = restored.forward(_batch(), "cross_entropy").result()
    for a, b in zip(logprobs_before.loss_fn_outputs, restored_out.loss_fn_outputs):
        assert torch.equal(a["logprobs"].to_torch(), b["logprobs"].to_torch())
    restored.forward_backward(_batch(), "cross_entropy")
    restored.optim_step(adam).result()
    a = client.forward(_batch(), "cross_entropy").result().loss_fn_outputs[0]["logprobs"].to_torch()
    b = restored.forward(_batch(), "cross_entropy").result().loss_fn_outputs[0]["logprobs"].to_torch()
    assert torch.equal(a, b)  # the optimizer state came back too


def test_sampling_batches_stops_and_async(service):
    sampler = service.create_sampling_client(base_model="tiny-chat").result()
    tokenizer = sampler.get_tokenizer()
    prompt = types.ModelInput.from_ints(tokenizer.encode("hello"))

    async def many() -> list[types.SampleResponse]:
        futures = [sampler.sample(prompt, 2, types.SamplingParams(max_tokens=5, temperature=1.0, seed=i)) for i in range(4)]
        return await asyncio.gather(*(f.result_async() for f in futures))

    responses = asyncio.run(many())
    assert all(len(r.sequences) == 2 for r in responses)
    for r in responses:
        for seq in r.sequences:
            assert 1 <= len(seq.tokens) <= 5 and len(seq.logprobs) == len(seq.tokens)
            assert all(lp <= 0 for lp in seq.logprobs)
    # Seeded sampling is reproducible.
    again = asyncio.run(many())
    assert [s.tokens for r in responses for s in r.sequences] == [s.tokens for r in again for s in r.sequences]
    logprobs = sampler.compute_logprobs(prompt).result()
    assert logprobs[0] is None and len(logprobs) == prompt.length


def test_unsupported_loss_names_the_supported_ones():
    with pytest.raises(NotImplementedError, match="cross_entropy.*stable_reinforce, and custom"):
        check_loss_fn("no_such_loss")
