"""The learning-rate plugin: exact values against the documented formula, Tinker's
recommended LR, and a user's own ``lr_for_step`` replacing it in a real run."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conftest import read_jsonl, run_inprocess, write_config
from tinkerplug.config import RunConfig
from tinkerplug.errors import ConfigError
from tinkerplug_schedule.plugin import lr_for_step, recommended_lr


def _config(**values: object) -> RunConfig:
    """A config with the ``[schedule]`` table of these ``values`` (the rest: top-level keys)."""
    from tinkerplug_schedule.settings import ScheduleSettings

    table = {k: v for k, v in values.items() if k in ScheduleSettings.model_fields}
    core = {k: v for k, v in values.items() if k not in table}
    config = RunConfig.model_validate({"base_model": "tiny-chat", "data": {"train": "t.jsonl"}, **core})
    config._sections = {"schedule": ScheduleSettings(**table)}
    return config


def _lrs(num_steps: int, **values: object) -> list[float]:
    config = _config(**values)
    return [lr_for_step(step=s, num_steps=num_steps, config=config) for s in range(num_steps)]


# N = 10 steps, W = 2 warmup steps, B = 1e-3, M = 1e-4: decay progress p = (step - 2) / 8,
# so the midpoint of the decay (p = 1/2) is step 6 and the last step has p = 7/8.
B, M, N, W = 1e-3, 1e-4, 10, 2
COSINE_LAST = M + (B - M) * (1 + math.cos(7 * math.pi / 8)) / 2
LINEAR_LAST = M + (B - M) * (1 / 8)


@pytest.mark.parametrize(
    "kind, mid, last",
    [
        ("cosine", M + (B - M) / 2, COSINE_LAST),
        ("linear", M + (B - M) / 2, LINEAR_LAST),
        ("constant", B, B),
    ],
)
def test_schedule_values_at_start_end_of_warmup_midpoint_and_last_step(kind, mid, last):
    lrs = _lrs(N, learning_rate=B, min_lr=M, warmup_steps=W, lr_schedule=kind)
    assert lrs[0] == pytest.approx(B / W, rel=1e-12)  # step 0: B * 1 / W
    assert lrs[W - 1] == pytest.approx(B, rel=1e-12)  # end of warmup reaches B
    assert lrs[W] == pytest.approx(B, rel=1e-12)  # the decay starts at B
    assert lrs[6] == pytest.approx(mid, rel=1e-12)
    assert lrs[N - 1] == pytest.approx(last, rel=1e-12)
    if kind != "constant":  # strictly decreasing after warmup, never below the floor
        decay = lrs[W:]
        assert all(a > b for a, b in zip(decay, decay[1:])) and min(decay) > M


def test_cosine_without_warmup_or_floor():
    lrs = _lrs(4, learning_rate=2e-4)  # p = 0, 1/4, 1/2, 3/4
    expected = [2e-4 * (1 + math.cos(math.pi * k / 4)) / 2 for k in range(4)]
    assert lrs == pytest.approx(expected, rel=1e-12)
    assert lrs[0] == 2e-4 and lrs[2] == pytest.approx(1e-4, rel=1e-12)


@pytest.mark.parametrize(
    "num_steps, ratio, warmup",
    [(30, 0.1, 3), (30, 0.05, 2), (20, 0.25, 5), (7, 0.5, 4)],  # ceil(ratio * N); 0.1 * 30 is 3.0000000000000004
)
def test_warmup_ratio_is_ceil_of_ratio_times_steps(num_steps, ratio, warmup):
    lrs = _lrs(num_steps, learning_rate=1e-3, warmup_ratio=ratio, lr_schedule="linear")
    assert lrs[0] == pytest.approx(1e-3 / warmup, rel=1e-12)
    assert lrs[warmup - 1] == pytest.approx(1e-3, rel=1e-12)
    assert lrs[warmup] == pytest.approx(1e-3, rel=1e-12)
    assert lrs[-1] == pytest.approx(1e-3 / (num_steps - warmup), rel=1e-12)
    assert _lrs(num_steps, learning_rate=1e-3, warmup_ratio=ratio, warmup_steps=1)[0] == 1e-3  # steps win


def test_warmup_longer_than_the_run_only_warms_up():
    assert _lrs(3, learning_rate=3e-3, warmup_steps=10) == pytest.approx([1e-3, 2e-3, 3e-3], rel=1e-12)


# -- Tinker's recommended LR ------------------------------------------------------------------


def test_recommended_lr_of_the_shipped_model_uses_its_hidden_size():
    expected = 5e-5 * 10 * (2000 / 128) ** 0.0775  # tiny-chat: a Qwen3 model, hidden_size 128
    assert recommended_lr("tiny-chat") == pytest.approx(expected, rel=1e-12)
    lrs = _lrs(10, use_recommended_lr=True, learning_rate=1.0, min_lr=1e-5)
    assert lrs[0] == pytest.approx(expected, rel=1e-12)  # learning_rate is ignored
    assert lrs[5] == pytest.approx(1e-5 + (expected - 1e-5) / 2, rel=1e-12)


def test_recommended_lr_of_a_local_llama_dir(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 4096}))
    assert recommended_lr(str(tmp_path)) == pytest.approx(5e-4 * (2000 / 4096) ** 0.781, rel=1e-12)


@pytest.mark.parametrize(
    "name, hidden, exponent",
    [("Qwen/Qwen3-8B", 4096, 0.0775), ("Qwen/Qwen3-30B-A3B", 2048, 0.0775), ("meta-llama/Llama-3.2-1B", 2048, 0.781)],
)
def test_recommended_lr_of_hub_names_comes_from_the_cookbook_without_network(monkeypatch, name, hidden, exponent):
    from tinker_cookbook import hyperparam_utils

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    def no_hub(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"network look-up of {args}")

    monkeypatch.setattr(hyperparam_utils.AutoConfig, "from_pretrained", no_hub)
    assert recommended_lr(name) == pytest.approx(5e-4 * (2000 / hidden) ** exponent, rel=1e-12)


@pytest.mark.parametrize("name", ["mistralai/Mistral-7B-v0.1", "deepseek-ai/DeepSeek-V3.1"])
def test_recommended_lr_of_an_unknown_or_uncalibrated_hub_model_is_a_config_error(name):
    with pytest.raises(ConfigError, match="no recommended LR") as info:
        recommended_lr(name)
    assert "use_recommended_lr = false" in info.value.hint


def test_recommended_lr_of_an_unknown_local_family_is_a_config_error(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "hidden_size": 768}))
    with pytest.raises(ConfigError, match="'gpt2' model.*llama and qwen") as info:
        _lrs(2, base_model=str(tmp_path), use_recommended_lr=True)
    assert "learning_rate" in info.value.hint


def test_min_lr_above_the_recommended_lr_is_a_config_error():
    with pytest.raises(ConfigError, match="min_lr"):
        _lrs(2, use_recommended_lr=True, min_lr=0.1)
    with pytest.raises(ConfigError, match=r"\[schedule\] min_lr \(0.01\) is above learning_rate \(0.001\)"):
        _lrs(2, learning_rate=1e-3, min_lr=1e-2)


# -- a user's schedule replaces the plugin ------------------------------------------------------

USER_SCHEDULE = '''
import tinkerplug


@tinkerplug.hookimpl
def lr_for_step(step, num_steps, config):
    """Steps 0 and 1 train; from step 2 on the learning rate is zero."""
    return [7e-3, 3e-3][step] if step < 2 else 0.0
'''


def test_a_project_file_replaces_the_schedule_and_its_lr_is_what_the_optimizer_gets(tmp_path):
    (tmp_path / "my_lr.py").write_text(USER_SCHEDULE)
    config = write_config(tmp_path, num_steps=4, batch_size=4, save_every=2, lr_schedule="cosine", warmup_steps=1)
    result = run_inprocess("run", str(config), "-q", "-p", "./my_lr.py", "--set", "heldout.limit=2", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    rows = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if "train/loss" in r]
    assert [r["lr"] for r in rows] == [7e-3, 3e-3, 0.0, 0.0]
    # The logged LR is the one the optimizer used: zero LR from step 2 leaves the adapter of
    # the step-2 checkpoint unchanged at step 4, while steps 0-1 moved it.
    checkpoints = {c["step"]: c["state_path"] for c in read_jsonl(tmp_path / "run" / "checkpoints.jsonl")}
    at_2, at_4 = _adapter(checkpoints[2]), _adapter(checkpoints[4])
    assert all((at_2[k] == at_4[k]).all() for k in at_2)
    assert any(bool(v.abs().sum() > 0) for k, v in at_2.items() if "lora_B" in k)


def _adapter(state_path: str) -> dict:
    from safetensors.torch import load_file

    return load_file(str(Path(state_path) / "adapter_model.safetensors"))
