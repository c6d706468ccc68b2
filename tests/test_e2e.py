"""A real short run through the CLI: the loss falls, held-out exact match rises."""

from __future__ import annotations

import json

from conftest import read_jsonl, run_inprocess, write_config


def test_run_trains_evaluates_and_checkpoints(tmp_path):
    config = write_config(tmp_path, num_steps=60, eval_every=30, save_every=30)
    result = run_inprocess("run", str(config))
    assert result.returncode == 0, result.stderr
    run_dir = tmp_path / "run"
    rows = read_jsonl(run_dir / "metrics.jsonl")
    steps = [r for r in rows if "train/loss" in r]
    assert [r["step"] for r in steps] == list(range(60))
    for key in ("train/loss", "lr", "train/trained_tokens", "train/input_tokens", "epoch"):
        assert key in steps[0]
    first = sum(r["train/loss"] for r in steps[:5]) / 5
    last = sum(r["train/loss"] for r in steps[-5:]) / 5
    assert last < 0.5 * first, (first, last)
    evals = {r["step"]: r["eval/heldout/exact_match"] for r in rows if "eval/heldout/exact_match" in r}
    assert sorted(evals) == [0, 30, 60]
    assert evals[60] > evals[0] + 0.3, evals
    checkpoints = read_jsonl(run_dir / "checkpoints.jsonl")
    assert [c["step"] for c in checkpoints] == [30, 60]
    for c in checkpoints:
        assert (json.loads((run_dir / "config.json").read_text())["base_model"]) == "tiny-chat"
        assert (run_dir / "checkpoints").is_dir() and c["state_path"].startswith(str(run_dir))
    assert "tinkerplug run summary" in result.stderr + result.stdout


def test_existing_run_dir_is_refused_and_untouched(tmp_path):
    config = write_config(tmp_path)
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "metrics.jsonl").write_text("precious\n")
    result = run_inprocess("run", str(config))
    assert result.returncode != 0
    assert "already exists" in result.stderr and "--resume" in result.stderr
    assert "Traceback" not in result.stderr
    assert (run_dir / "metrics.jsonl").read_text() == "precious\n"
    assert sorted(p.name for p in run_dir.iterdir()) == ["metrics.jsonl"]
