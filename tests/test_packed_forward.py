"""Packed rows and the chunked LM head give the padded full-logits results, values and gradients."""

from __future__ import annotations

import pytest
import torch

from tinkerplug_local import lm_head
from tinkerplug_local.forward import ForwardOptions, microbatch_logprobs
from tinkerplug_local.packing import equal_length_batches, length_groups, packed_rows


def _lengths() -> list[int]:
    return [9, 31, 4, 57, 18, 2, 40, 23, 31, 31]  # three of 31: an unpadded (3, 31) batch


def _tokens(vocab: int) -> list[list[int]]:
    g = torch.Generator().manual_seed(0)
    return [torch.randint(0, vocab, (n,), generator=g).tolist() for n in _lengths()]


def _targets(tokens: list[list[int]], vocab: int, k: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randint(0, vocab, (len(t), k) if k else (len(t),), generator=g) for t in tokens]


def _reference(model, tokens, targets, pad_id):
    """Today's path before packing: one right-padded batch, full fp32 logits, log_softmax."""
    width = max(len(t) for t in tokens)
    ids = torch.full((len(tokens), width), pad_id)
    mask = torch.zeros((len(tokens), width), dtype=torch.long)
    for row, t in enumerate(tokens):
        ids[row, : len(t)] = torch.tensor(t)
        mask[row, : len(t)] = 1
    logprobs = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float(), dim=-1)
    out = []
    for row, target in enumerate(targets):
        picked = logprobs[row, : len(target)]
        out.append(picked.gather(-1, target[:, None])[:, 0] if target.dim() == 1 else picked.gather(-1, target))
    return out


def _trained_client(service):
    client = service.create_lora_training_client("tiny-chat", rank=4, seed=3).result()
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():  # non-zero LoRA B everywhere, the unembedding included
        for name, p in client._host.adapter_params(client._adapter):
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    return client


def _grads(client):
    return [p.grad.clone() for _, p in client._host.adapter_params(client._adapter)]


def _zero(client):
    for _, p in client._host.adapter_params(client._adapter):
        p.grad = None


@pytest.mark.parametrize("k", [0, 3])
@pytest.mark.parametrize("small_chunks", [False, True])
def test_packed_chunked_equals_padded_full_logits(service, monkeypatch, k, small_chunks):
    if small_chunks:  # many head chunks per row, and a chunk boundary inside each datum
        monkeypatch.setattr(lm_head, "CHUNK_ELEMENTS", 1)
    client = _trained_client(service)
    host, model = client._host, client._host.model_for(client._adapter)
    vocab = host.model.config.vocab_size
    tokens = _tokens(vocab)
    targets = _targets(tokens, vocab, k)
    weights = [torch.rand(len(t), generator=torch.Generator().manual_seed(i)) for i, t in enumerate(tokens)]
    pad = host.tokenizer.pad_token_id or 0

    want = _reference(model, tokens, targets, pad)
    sum(-(lp * w[:, None] if k else lp * w).sum() for lp, w in zip(want, weights)).backward()
    want_grads = _grads(client)
    _zero(client)

    got = [None] * len(tokens)
    for batch in microbatch_logprobs(model, tokens, targets, host.device, pad, grad=True, options=ForwardOptions(microbatch_tokens=64)):
        loss = 0
        for i, lp in zip(batch.indices, batch.logprobs):
            got[i] = lp.detach()
            loss = loss + -(lp * weights[i][:, None] if k else lp * weights[i]).sum()
        loss.backward()
    for g, w in zip(got, want):
        assert g.shape == w.shape
        torch.testing.assert_close(g, w.detach(), atol=1e-5, rtol=1e-5)
    assert len(want_grads) > 0
    for g, w in zip(_grads(client), want_grads):  # sums over ~300 tokens: tolerance on their scale
        torch.testing.assert_close(g, w, atol=1e-5 * max(1.0, float(w.abs().max())), rtol=1e-4)


def test_forward_without_grad_and_base_model_match(service):
    client = _trained_client(service)
    host = client._host
    tokens = _tokens(host.model.config.vocab_size)
    targets = _targets(tokens, host.model.config.vocab_size, 0)
    pad = host.tokenizer.pad_token_id or 0
    for adapter in (client._adapter, None):
        model = host.model_for(adapter)
        with torch.no_grad():
            want = _reference(model, tokens, targets, pad)
        for batch in microbatch_logprobs(model, tokens, targets, host.device, pad, grad=False):
            for i, lp in zip(batch.indices, batch.logprobs):
                assert not lp.requires_grad
                torch.testing.assert_close(lp, want[i], atol=1e-5, rtol=1e-5)


def test_gradient_checkpointing_gives_the_same_gradients(tmp_path):
    from tinkerplug_local import ServiceClient

    results = []
    for on in (False, True):
        with ServiceClient(checkpoint_dir=tmp_path / str(on), gradient_checkpointing=on) as service:
            client = _trained_client(service)
            host = client._host
            tokens = _tokens(host.model.config.vocab_size)
            targets = _targets(tokens, host.model.config.vocab_size, 0)
            model = host.model_for(client._adapter)
            for batch in microbatch_logprobs(model, tokens, targets, host.device, 0, grad=True, options=host.forward_options):
                sum(-lp.sum() for lp in batch.logprobs).backward()
            results.append(_grads(client))
    for a, b in zip(*results):
        assert torch.equal(a, b)  # recomputation repeats the same arithmetic


def test_layouts_cover_every_datum_once():
    lengths = [5, 700, 30, 30, 512, 1, 300]
    batches, rest = equal_length_batches(lengths, 40)
    assert batches == [[2], [3]] and rest == [0, 1, 4, 5, 6]  # 30 + 30 > 40: one a batch
    for groups in (packed_rows(lengths, 512), length_groups(lengths, 1024), batches + [rest]):
        assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    rows = packed_rows(lengths, 512)
    assert all(sum(lengths[i] for i in r) <= 512 or len(r) == 1 for r in rows)
    assert all(max(lengths[i] for i in g) * len(g) <= 1024 or len(g) == 1 for g in length_groups(lengths, 1024))


@pytest.mark.parametrize("softcap", [None, 5.0])
@pytest.mark.parametrize("generic", [False, True])
def test_chunked_head_matches_autograd(monkeypatch, softcap, generic):
    monkeypatch.setattr(lm_head, "CHUNK_ELEMENTS", 1)  # 16 tokens a chunk
    g = torch.Generator().manual_seed(5)
    linear = torch.nn.Linear(8, 50, bias=True)
    head = torch.nn.Sequential(linear) if generic else linear  # Sequential: the checkpointed path
    hidden = torch.randn(37, 8, generator=g, requires_grad=True)
    targets = torch.randint(0, 50, (37, 3), generator=g)
    upstream = torch.randn(37, 3, generator=g)

    logits = linear(hidden)
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    want = torch.log_softmax(logits, -1).gather(-1, targets)
    want_grads = torch.autograd.grad((want * upstream).sum(), [hidden, linear.weight, linear.bias])
    got = lm_head.token_logprobs(hidden, head, targets, softcap)
    got_grads = torch.autograd.grad((got * upstream).sum(), [hidden, linear.weight, linear.bias])
    torch.testing.assert_close(got, want.detach(), atol=1e-5, rtol=1e-5)
    for a, b in zip(got_grads, want_grads):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_lora_head_is_taken_apart(service):
    client = _trained_client(service)
    head = client._host.model.get_output_embeddings()
    parts = lm_head._as_linear(head)
    assert parts is not None and parts[2] is not None  # tiny-chat trains the unembedding: LoRA on the head
    with client._host.peft.disable_adapter():
        assert lm_head._as_linear(head)[2] is None


@pytest.mark.parametrize("split", [True, False])
def test_fallbacks_for_models_that_fail_the_check(service, monkeypatch, split):
    """Attention that ignores position ids: padded length groups; a head that can't be split
    off: the plain full-logits forward. Both give the same logprobs."""
    from tinkerplug_local import forward

    client = _trained_client(service)
    host = client._host
    model = host.model_for(client._adapter)
    tokens = _tokens(host.model.config.vocab_size)
    targets = _targets(tokens, host.model.config.vocab_size, 2)
    with torch.no_grad():
        want = _reference(model, tokens, targets, 0)
    monkeypatch.setattr(forward, "_checked", {})
    monkeypatch.setattr(forward, "_check_model", lambda parts, device: (split, False, (64, 64)))
    seen = []
    for batch in microbatch_logprobs(model, tokens, targets, host.device, 0, grad=False):
        seen += batch.indices
        for i, lp in zip(batch.indices, batch.logprobs):
            torch.testing.assert_close(lp, want[i], atol=1e-5, rtol=1e-5)
    assert sorted(seen) == list(range(len(tokens)))
