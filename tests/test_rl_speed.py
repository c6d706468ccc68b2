"""The RL fast paths stay exact: one prefill per distinct prompt, finished rows leaving the
decode batch, vectorized sampling, and right-padded batches for short training datums."""

from __future__ import annotations

import math

import torch
from tinker import types

from tinkerplug_local import generate, packing
from tinkerplug_local.forward import microbatch_logprobs
from tinkerplug_local.generate import Row, choose_tokens


def _row(temperature: float = 1.0, top_k: int = -1, top_p: float = 1.0, seed: int | None = 0) -> Row:
    generator = torch.Generator().manual_seed(seed) if seed is not None else None
    return Row([1], 4, temperature, top_k, top_p, set(), [], generator)


def test_choose_tokens_matches_each_rows_own_distribution():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 50, generator=g) * 3
    rows = [_row(0.0), _row(0.7, top_k=5), _row(1.0, top_p=0.6), _row(1.3, top_k=8, top_p=0.9)]
    tokens, logprobs = choose_tokens(logits, rows)
    assert tokens[0] == int(logits[0].argmax())
    assert math.isclose(logprobs[0], float(torch.log_softmax(logits[0], -1)[tokens[0]]), rel_tol=1e-6)
    assert tokens[1] in torch.topk(logits[1], 5).indices.tolist()
    for i, row in enumerate(rows[1:], start=1):  # the logprob is the truncated distribution's
        want = torch.log_softmax(generate._truncated(logits[i : i + 1] / row.temperature, row.top_k, row.top_p), -1)
        assert math.isclose(logprobs[i], float(want[0, tokens[i]]), rel_tol=1e-5)
        assert want[0, tokens[i]] > float("-inf")


def test_inverse_cdf_draws_follow_the_probabilities():
    probs = torch.tensor([[0.5, 0.0, 0.3, 0.2]])
    generator = torch.Generator().manual_seed(1)
    counts = torch.zeros(4)
    for _ in range(4000):
        counts[generate._inverse_cdf(probs, [generator])[0]] += 1
    assert counts[1] == 0  # a token of probability 0 is never drawn
    assert torch.allclose(counts / counts.sum(), probs[0], atol=0.03)


def test_a_seeded_row_samples_the_same_alone_or_in_a_batch():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(3, 40, generator=g)
    alone = choose_tokens(logits[1:2], [_row(seed=7)])
    batched = choose_tokens(logits, [_row(seed=3), _row(seed=7), _row(0.5, seed=None)])
    assert batched[0][1] == alone[0][0] and math.isclose(batched[1][1], alone[1][0], rel_tol=1e-6)


class _Counting:
    """The host's model, recording (batch rows, columns) of every call."""

    def __init__(self, model):
        self.model, self.seen = model, []

    def __call__(self, **kwargs):
        self.seen.append(tuple(kwargs["input_ids"].shape))
        return self.model(**kwargs)

    def __getattr__(self, name):
        return getattr(self.model, name)


def test_group_shares_one_prefill_and_finished_rows_leave(service, monkeypatch):
    sampler = service.create_sampling_client(base_model="tiny-chat").result()
    host = sampler._host
    counting = _Counting(host.model_for(None))
    monkeypatch.setattr(host, "model_for", lambda adapter: counting)
    seen = counting.seen
    prompt = types.ModelInput.from_ints(sampler.get_tokenizer().encode("Reverse: abc"))
    short = types.SamplingParams(max_tokens=2, temperature=1.0, stop=[], seed=0)
    long = types.SamplingParams(max_tokens=5, temperature=1.0, stop=[], seed=1)
    futures = [sampler.sample(prompt, 4, short), sampler.sample(prompt, 2, long)]  # queued together
    responses = [f.result() for f in futures]
    assert [len(s.tokens) for r in responses for s in r.sequences] == [2] * 4 + [5] * 2
    prefills = [shape for shape in seen if shape[1] > 1]
    assert prefills and all(rows == 1 for rows, _ in prefills)  # six samples, one distinct prompt
    decode_rows = [rows for rows, cols in seen if cols == 1]
    assert 6 in decode_rows and decode_rows[-1] == 2  # the short rows left after their 2 tokens


def test_sampler_logprobs_equal_trainer_logprobs_with_groups(service):
    client = service.create_lora_training_client("tiny-chat", rank=4, seed=5).result()
    with torch.no_grad():
        for _, p in client._host.adapter_params(client._adapter):
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(6)) * 0.05)
    sampler = client.save_weights_and_get_sampling_client().result()
    tokenizer = sampler.get_tokenizer()
    prompts = [types.ModelInput.from_ints(tokenizer.encode(f"Reverse: {w}")) for w in ("abc", "defgh", "abc")]
    params = types.SamplingParams(max_tokens=12, temperature=1.0, seed=3)
    futures = [sampler.sample(p, 4, params) for p in prompts]
    data, sampled = [], []
    for prompt, future in zip(prompts, futures):
        for seq in future.result().sequences:
            tokens = prompt.to_ints() + seq.tokens
            data.append(types.Datum(
                model_input=types.ModelInput.from_ints(tokens[:-1]),
                loss_fn_inputs={"target_tokens": tokens[1:], "weights": [1.0] * (len(tokens) - 1)},
            ))
            sampled.append(seq.logprobs)
    out = client.forward(data, "cross_entropy").result().loss_fn_outputs
    for lp, want in zip(out, sampled):
        got = lp["logprobs"].to_torch()[-len(want):]
        torch.testing.assert_close(got, torch.tensor(want), atol=1e-4, rtol=1e-4)


def test_short_datums_run_as_one_padded_batch_and_match_alone(service):
    client = service.create_lora_training_client("tiny-chat", rank=4, seed=7).result()
    host = client._host
    model = host.model_for(client._adapter)
    g = torch.Generator().manual_seed(8)
    lengths = [int(n) for n in torch.randint(18, 34, (64,), generator=g)]  # an RL step's shape
    tokens = [torch.randint(0, 500, (n,), generator=g).tolist() for n in lengths]
    targets = [torch.randint(0, 500, (n,), generator=g) for n in lengths]
    batches = list(microbatch_logprobs(model, tokens, targets, host.device, 0, grad=False))
    assert len(batches) <= 2  # not nine packed rows
    for batch in batches:
        for i, lp in zip(batch.indices, batch.logprobs):
            (alone,) = microbatch_logprobs(model, [tokens[i]], [targets[i]], host.device, 0, grad=False)
            torch.testing.assert_close(lp, alone.logprobs[0], atol=1e-5, rtol=1e-5)


def test_layout_cost_keeps_long_varied_datums_packed(service):
    from tinkerplug_local import forward

    lengths = [36, 500, 120, 762, 300, 90, 640, 45]  # real_scale's SFT shape
    padded = packing.padded_batches(lengths, 8192)
    assert sorted(i for g in padded for i in g) == list(range(len(lengths)))
    client = service.create_lora_training_client("tiny-chat", rank=4, seed=7).result()
    parts = forward._model_parts(client._host.model_for(client._adapter), "cpu", forward.ForwardOptions())
    groups, is_padded = forward._layout(parts, lengths, 8192, "cpu")
    assert not is_padded and sorted(i for g in groups for i in g) == list(range(len(lengths)))
    short = [20, 22, 21, 25, 30, 24] * 8
    assert len(packing.padded_batches(short, 8192)) == 1
    assert packing.layout_cost([list(range(48))], short, True) < packing.layout_cost(
        packing.packed_rows(short, 512), short, False)


def test_compute_logprobs_sent_together_share_one_forward(service, monkeypatch):
    sampler = service.create_sampling_client(base_model="tiny-chat").result()
    tokenizer = sampler.get_tokenizer()
    prompts = [types.ModelInput.from_ints(tokenizer.encode(text)) for text in ("Reverse: abc", "hello there", "x", "Reverse: abc")]
    alone = [sampler.compute_logprobs(p, prompt_logprobs_last_n=2 if i == 1 else None).result() for i, p in enumerate(prompts)]
    calls = []
    real = sampler._host.model_for
    monkeypatch.setattr(sampler._host, "model_for", lambda adapter: calls.append(adapter) or real(adapter))
    futures = [sampler.compute_logprobs(p, prompt_logprobs_last_n=2 if i == 1 else None) for i, p in enumerate(prompts)]
    together = [f.result() for f in futures]
    assert len(calls) < len(prompts)  # batched (the first may run before the rest are queued)
    assert together[2] == [None]  # one token: nothing to score
    for a, b in zip(alone, together):
        assert len(a) == len(b) and [x is None for x in a] == [x is None for x in b]
        torch.testing.assert_close(torch.tensor([x for x in b if x is not None]), torch.tensor([x for x in a if x is not None]),
                                   atol=1e-5, rtol=1e-5)
    assert sum(x is not None for x in together[1]) == 2  # prompt_logprobs_last_n


def test_head_backward_skips_tokens_without_gradient_exactly(monkeypatch):
    from tinkerplug_local import lm_head

    monkeypatch.setattr(lm_head, "CHUNK_ELEMENTS", 1)  # 16 tokens a chunk: several chunks
    g = torch.Generator().manual_seed(9)
    linear = torch.nn.Linear(8, 50, bias=True)
    hidden = torch.randn(45, 8, generator=g, requires_grad=True)
    targets = torch.randint(0, 50, (45, 1), generator=g)
    upstream = torch.randn(45, 1, generator=g)
    upstream[:20] = 0.0  # a prompt: no gradient
    upstream[30:33] = 0.0
    want = torch.log_softmax(linear(hidden), -1).gather(-1, targets)
    want_grads = torch.autograd.grad((want * upstream).sum(), [hidden, linear.weight, linear.bias])
    got = lm_head.token_logprobs(hidden, linear, targets)
    got_grads = torch.autograd.grad((got * upstream).sum(), [hidden, linear.weight, linear.bias])
    assert torch.equal(got_grads[0][:20], torch.zeros(20, 8))
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_shared_prompt_positions_go_through_the_head_once(service, monkeypatch):
    from tinkerplug_local import forward, lm_head

    client = service.create_lora_training_client("tiny-chat", rank=4, seed=10).result()
    host = client._host
    with torch.no_grad():  # non-zero LoRA B everywhere, the unembedding included
        for _, p in host.adapter_params(client._adapter):
            p.add_(torch.randn(p.shape, generator=torch.Generator().manual_seed(11)) * 0.05)
    model = host.model_for(client._adapter)
    g = torch.Generator().manual_seed(12)
    prompts = [torch.randint(0, 500, (n,), generator=g).tolist() for n in (15, 19)]
    tokens = [p + torch.randint(0, 500, (int(torch.randint(1, 9, (1,), generator=g)),), generator=g).tolist()
              for p in prompts for _ in range(4)]
    targets = [torch.tensor(t[1:] + [7]) for t in tokens]  # the prompt's targets repeat in its group
    upstream = [torch.rand(len(t), generator=g) for t in tokens]
    head_rows = []
    real = lm_head.token_logprobs
    monkeypatch.setattr(lm_head, "token_logprobs", lambda h, *a: head_rows.append(h.shape[0]) or real(h, *a))

    def run(share: bool):
        if not share:
            monkeypatch.setattr(forward, "shared_positions", lambda *a: None)
        out = [None] * len(tokens)
        for batch in microbatch_logprobs(model, tokens, targets, host.device, 0, grad=True):
            sum((lp * upstream[i]).sum() for i, lp in zip(batch.indices, batch.logprobs)).backward()
            for i, lp in zip(batch.indices, batch.logprobs):
                out[i] = lp.detach()
        grads = [p.grad.clone() for _, p in host.adapter_params(client._adapter)]
        for _, p in host.adapter_params(client._adapter):
            p.grad = None
        return out, grads

    shared_out, shared_grads = run(True)
    plain_out, plain_grads = run(False)
    assert head_rows[0] < head_rows[-1] == sum(len(t) for t in tokens)  # fewer rows through the head
    for a, b in zip(shared_out, plain_out):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    for a, b in zip(shared_grads, plain_grads):
        torch.testing.assert_close(a, b, atol=1e-5 * max(1.0, float(b.abs().max())), rtol=1e-4)
