"""``tinkerplug export`` after a short real run: the exported adapter and the merged model give
the logits the run's sampler gives."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
import torch

from conftest import read_jsonl, run_inprocess

PROMPT = [{"role": "user", "content": "What is 47 - 18?"}, {"role": "assistant", "content": "29"}]


@pytest.fixture(scope="module")
def run_dir(short_run: Path) -> Path:
    """The session's short run (checkpoints at steps 3 and 6): export only reads it."""
    return short_run


def _tokens() -> list[int]:
    from transformers import AutoTokenizer

    from tinkerplug.models import shipped_model_dir

    ids = AutoTokenizer.from_pretrained(shipped_model_dir("tiny-chat")).apply_chat_template(PROMPT, tokenize=True)
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def _sampler_logprobs(service, sampler_path: str, tokens: list[int]) -> torch.Tensor:
    """What the run's sampler (the local backend's SamplingClient) says about ``tokens``."""
    from tinker import types

    sampler = service.create_sampling_client(model_path=sampler_path).result()
    values = sampler.compute_logprobs(types.ModelInput.from_ints(tokens)).result()
    return torch.tensor(values[1:])


def _model_logprobs(model, tokens: list[int]) -> torch.Tensor:
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([tokens])).logits[0, :-1].float()
    return torch.log_softmax(logits, -1).gather(1, torch.tensor(tokens[1:])[:, None])[:, 0]


def test_adapter_loads_with_peft_and_matches_the_sampler(run_dir, tmp_path, service):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "adapter"
    result = run_inprocess("export", str(run_dir), "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in out.iterdir()}
    info = json.loads((out / "tinkerplug_export.json").read_text())
    last = read_jsonl(run_dir / "checkpoints.jsonl")[-1]
    assert info["step"] == last["step"] == 6 and info["merged"] is False
    assert "tie_word_embeddings=True" in result.stdout  # tiny-chat ties them: PEFT's warning is explained

    tokens = _tokens()
    expected = _sampler_logprobs(service, last["sampler_path"], tokens)
    base_path = json.loads((out / "adapter_config.json").read_text())["base_model_name_or_path"]
    base = AutoModelForCausalLM.from_pretrained(base_path, dtype=torch.float32)
    base_logprobs = _model_logprobs(base, tokens)
    adapted = _model_logprobs(PeftModel.from_pretrained(base, str(out)), tokens)
    assert torch.allclose(adapted, expected, atol=1e-5), (adapted - expected).abs().max()
    assert (base_logprobs - expected).abs().max() > 0.1  # the adapter is not a no-op


def test_merged_model_matches_the_sampler_of_its_step(run_dir, tmp_path, service):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "merged"
    result = run_inprocess("export", str(run_dir), "--step", "3", "--merge", "--out", str(out))
    assert result.returncode == 0, result.stderr
    names = {p.name for p in out.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= names
    assert "adapter_config.json" not in names  # a plain model: no PEFT needed to load it
    step3 = next(c for c in read_jsonl(run_dir / "checkpoints.jsonl") if c["step"] == 3)
    tokens = _tokens()
    expected = _sampler_logprobs(service, step3["sampler_path"], tokens)
    merged = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    # LoRA on a tied unembedding must not leak into the input embeddings.
    assert torch.allclose(_model_logprobs(merged, tokens), expected, atol=1e-4)
    assert AutoTokenizer.from_pretrained(out).apply_chat_template(PROMPT, tokenize=False)


def test_export_refuses_a_non_empty_out_and_an_unknown_step(run_dir, tmp_path):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    result = run_inprocess("export", str(run_dir), "--out", str(out))
    assert result.returncode != 0 and "already exists and is not empty" in result.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]

    result = run_inprocess("export", str(run_dir), "--step", "4", "--out", str(tmp_path / "x"))
    assert result.returncode != 0
    assert "no checkpoint at step 4" in result.stderr and "checkpoint steps: 3, 6" in result.stderr
    assert not (tmp_path / "x").exists() and "Traceback" not in result.stderr
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dir left


def test_tinker_checkpoints_are_fetched_through_the_backend_and_fail_fast(run_dir, tmp_path):
    """A run made on the service: export goes through the tinker plugin, which checks the
    service before the SDK's long retries; an unreachable one fails in seconds."""
    remote = tmp_path / "remote-run"
    remote.mkdir()
    config = json.loads((run_dir / "config.json").read_text())
    config.update(backend="tinker", base_model="Qwen/Qwen3-8B", tinker={"base_url": "http://127.0.0.1:9"})
    (remote / "config.json").write_text(json.dumps(config))
    record = {"step": 6, "epoch": 0, "batch": 6, "time": 0.0, "final": True,
              "state_path": "tinker://abc:train:0/weights/step-000006",
              "sampler_path": "tinker://abc:train:0/sampler_weights/step-000006"}
    (remote / "checkpoints.jsonl").write_text(json.dumps(record) + "\n")
    started = time.perf_counter()
    result = run_inprocess("export", str(remote), "--out", str(tmp_path / "out"), env={"TINKER_API_KEY": "tml-not-real"})
    assert result.returncode != 0
    assert "cannot reach Tinker at http://127.0.0.1:9" in result.stderr, result.stderr
    assert time.perf_counter() - started < 60
    assert not (tmp_path / "out").exists()
