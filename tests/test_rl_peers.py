"""Real peer clients, unmodified, through ``tinkerplug local`` on tiny-chat: the cookbook's
``recipes/rl_loop.py`` (importance_sampling), ``rl.train`` with a small env of our own (PPO with
clip thresholds), ``preference/train_dpo`` (forward_backward_custom) and on-policy distillation
with tiny-chat as its own teacher (compute_logprobs). Each driver in ``peer_drivers/`` only swaps
the dataset (and, for rl_loop, the GSM8K grader) for local ones."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

from conftest import read_jsonl, run_cli

MODEL = "tiny-chat"
DRIVERS = Path(__file__).parent / "peer_drivers"


def _run(tmp_path: Path, driver: str, *args: str):
    result = run_cli(
        "local", "--checkpoint-dir", str(tmp_path / "checkpoints"), "--",
        sys.executable, str(DRIVERS / driver), MODEL, *args, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.mark.slow
def test_cookbook_rl_loop_trains_with_importance_sampling(tmp_path):
    _run(tmp_path, "rl_loop_local.py", str(tmp_path / "log"), "3", "reverse", "3e-3", "4", "4")
    metrics = read_jsonl(tmp_path / "log" / "metrics.jsonl")
    assert [m["progress/batch"] for m in metrics] == [0, 1, 2]
    trained = [m for m in metrics if "grad_norm" in m]  # optim_step ran after forward_backward
    assert trained and all(math.isfinite(m["grad_norm"]) and m["grad_norm"] > 0 for m in trained)
    assert all(0 <= m["reward/total"] <= 1 for m in metrics)


@pytest.mark.slow
def test_cookbook_rl_train_with_ppo_and_clip_thresholds(tmp_path):
    _run(tmp_path, "rl_train_reverse.py", str(tmp_path / "log"), "4", "ppo")
    metrics = read_jsonl(tmp_path / "log" / "metrics.jsonl")
    assert len(metrics) == 4
    # The cookbook compares the sampler's logprobs with forward_backward's: the same weights
    # must give the same numbers (before the first update they are the same policy).
    assert abs(metrics[0]["optim/kl_sample_train_v1"]) < 1e-4
    assert all(0 <= m["env/all/correct"] <= 1 for m in metrics)


@pytest.mark.slow
def test_cookbook_train_dpo_on_local_comparisons(tmp_path):
    _run(tmp_path, "dpo_local.py", str(tmp_path / "log"), str(tmp_path / "data"), "6")
    metrics = [m for m in read_jsonl(tmp_path / "log" / "metrics.jsonl") if "dpo_loss" in m]
    assert len(metrics) == 6
    assert metrics[0]["dpo_loss"] == pytest.approx(math.log(2), abs=1e-4)  # policy == reference at step 0
    assert metrics[-1]["dpo_loss"] < metrics[0]["dpo_loss"] and metrics[-1]["margin"] > 0


@pytest.mark.slow
def test_cookbook_on_policy_distillation_self_teacher(tmp_path):
    _run(tmp_path, "distill_self.py", str(tmp_path / "log"), "3")
    metrics = read_jsonl(tmp_path / "log" / "metrics.jsonl")
    assert len(metrics) == 3
    assert abs(metrics[0]["teacher_kl"]) < 1e-4  # the student starts as its teacher


@pytest.mark.slow
def test_grpo_example_runs_unmodified(tmp_path):
    script = Path(__file__).parents[1] / "examples" / "grpo" / "train.py"
    imports = [line for line in script.read_text().splitlines() if line.startswith(("import ", "from "))]
    assert imports and not [line for line in imports if "tinkerplug" in line]  # a plain Tinker SDK script
    result = run_cli("local", "--checkpoint-dir", str(tmp_path / "ck"), "--", sys.executable, str(script),
                     "--steps", "3", "--batch", "4", "--group", "4", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rewards = [float(line.split()[-1]) for line in result.stdout.splitlines() if line.startswith("step ")]
    assert len(rewards) == 3 and all(0 <= r <= 1 for r in rewards)
    assert "held-out greedy accuracy after:" in result.stdout
