"""Whole runs of the objectives: RL killed with SIGKILL and resumed computes the same per-step
rewards and losses as an uninterrupted run; every objective trains with ``backend = "tinker"``
against ``tinkerplug serve`` (in this process, on a thread) through the SDK."""

from __future__ import annotations

import json
import signal

import pytest

from conftest import read_jsonl, run_cli, write_config
from test_objectives import _pairs, _with_train
from tinkerplug.cli import main

pytestmark = pytest.mark.slow

KEY = "tml-objectives-test-key"
RL = "[rl]\ngroup_size = 4\nmax_tokens = 4\n"
KILLER = '''
import os
import signal

import tinkerplug


@tinkerplug.hookimpl
def log_metrics(step, metrics, run):
    if f"step:{step}" == os.environ.get("TP_KILL_AT"):
        os.kill(os.getpid(), signal.SIGKILL)
'''


def _per_step(run_dir) -> dict[int, dict]:
    rows = {}
    for row in read_jsonl(run_dir / "metrics.jsonl"):
        if "train/loss" in row:
            assert row["step"] not in rows, f"step {row['step']} logged twice"
            rows[row["step"]] = {k: v for k, v in row.items() if k.startswith(("rl/", "train/"))}
    return rows


def test_rl_killed_and_resumed_gives_the_same_rewards_and_losses(tmp_path):
    reference_dir, work = tmp_path / "reference", tmp_path / "work"
    reference_dir.mkdir()
    work.mkdir()
    keys = dict(num_steps=6, batch_size=4, save_every=3, objective="rl", seed=3)
    main(["run", str(write_config(reference_dir, RL, **keys)), "-q"])
    config = write_config(work, RL, **keys)
    (work / "killer.py").write_text(KILLER)
    killed = run_cli("run", str(config), "-q", "-p", str(work / "killer.py"), cwd=work, env={"TP_KILL_AT": "step:4"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert [r["step"] for r in read_jsonl(work / "run" / "checkpoints.jsonl")] == [3]
    main(["run", str(config), "--resume", "-q"])
    expected, resumed = _per_step(reference_dir / "run"), _per_step(work / "run")
    assert sorted(resumed) == list(range(6))
    for step in range(6):
        # The sampler-learner KL compares two computations of the same logprobs (~1e-9): its
        # rounding depends on which requests the sampler batched together, which is timing.
        kl = [rows[step].pop("rl/sampler_learner_kl") for rows in (resumed, expected)]
        assert kl[0] == pytest.approx(kl[1], abs=1e-6), f"step {step}"
        assert resumed[step] == expected[step], f"step {step}"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    from tinkerplug_local.server.thread import ThreadServer

    with ThreadServer(tmp_path_factory.mktemp("objectives-serve") / "checkpoints", api_keys=[KEY]) as server:
        yield server


OBJECTIVES = {
    "rl": (RL, {}),
    "dpo": ("[dpo]\nbeta = 0.5\n", {}),
    "distill off_policy": ('[distill]\nteacher = "tiny-chat"\nmax_tokens = 4\n', {}),
    "distill on_policy": ('[distill]\nteacher = "tiny-chat"\nmode = "on_policy"\nmax_tokens = 4\n', {}),
    "distill top_k": ('[distill]\nteacher = "tiny-chat"\nmode = "top_k"\ntop_k = 4\n', {}),
}


@pytest.mark.parametrize("name", OBJECTIVES)
def test_each_objective_trains_on_the_tinker_backend_against_serve(name, served, tmp_path, monkeypatch):
    monkeypatch.setenv("TINKER_API_KEY", KEY)
    table, _ = OBJECTIVES[name]
    text = f'{table}[tinker]\nbase_url = "{served.url}"\n'
    config = write_config(tmp_path, text, num_steps=2, batch_size=4, objective=name.split()[0], backend="tinker")
    if name == "dpo":
        _with_train(config, _pairs(tmp_path))
    main(["run", str(config), "-q"])
    rows = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if "train/loss" in r]
    assert [r["step"] for r in rows] == [0, 1]
    marker = {"rl": "rl/reward", "dpo": "dpo/accuracy", "distill": "distill/teacher_kl"}[name.split()[0]]
    assert all(marker in r for r in rows)
    checkpoint = read_jsonl(tmp_path / "run" / "checkpoints.jsonl")[-1]
    assert checkpoint["state_path"].startswith("tinker://")
    assert json.loads((tmp_path / "run" / "config.json").read_text())["objective"] == name.split()[0]
