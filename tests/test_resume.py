"""Exact resume: real ``tinkerplug run`` processes are stopped with Ctrl-C and killed with
SIGKILL at several points, resumed each time, and must end exactly where an uninterrupted run
does: the same per-step losses, bit-identical final weights, no duplicated metrics rows, and a
``checkpoints.jsonl`` that is never torn.

The run is multi-epoch (48 examples, batch 4: 12 steps per epoch, 30 steps) with checkpoints
every 6 steps, so resumes land on an epoch boundary (step 12, cookbook #367: a resume must not
skip or replay an epoch) and mid-epoch (steps 18 and the Ctrl-C step; #935: no replayed batch).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import DATA, read_jsonl, run_cli, run_inprocess
from tinkerplug.batches import BatchPlan

BASE_MODEL = os.environ.get("TINKERPLUG_TEST_MODEL", "tiny-chat")
STEPS, SAVE_EVERY, EVAL_EVERY, BATCH, EXAMPLES = 30, 6, 12, 4, 48

# A project plugin that SIGKILLs its own process at the point named by TP_KILL_AT: a real
# SIGKILL, at an exact place, so each kill point is tested every time.
KILLER = '''
import os
import signal

import tinkerplug
from tinkerplug_local import store

AT = os.environ.get("TP_KILL_AT", "")


def _die(point):
    if point == AT:
        os.kill(os.getpid(), signal.SIGKILL)


@tinkerplug.hookimpl
def log_metrics(step, metrics, run):
    _die(f"step:{step}")  # steps after it are in flight in the pipelined executor


@tinkerplug.hookimpl
def on_checkpoint(record, run):
    _die(f"checkpoint:{record.step}")  # right after the row is in checkpoints.jsonl


_write = store.CheckpointStore.write


def _write_then_die(self, model_id, kind, name, fill):
    def fill_then_die(tmp):
        fill(tmp)
        _die(f"writing:{kind}/{name}")  # files written into the temp dir, not renamed yet

    return _write(self, model_id, kind, name, fill_then_die)


store.CheckpointStore.write = _write_then_die
'''


def _config(directory: Path) -> Path:
    train = directory / "train.jsonl"
    lines = (DATA / "fast_train.jsonl").read_text().splitlines()[:EXAMPLES]
    train.write_text("\n".join(lines) + "\n")
    path = directory / "config.toml"
    path.write_text(
        f"base_model = {json.dumps(BASE_MODEL)}\n"
        f"learning_rate = 3e-3\nbatch_size = {BATCH}\nnum_steps = {STEPS}\nmax_length = 64\n"
        f"save_every = {SAVE_EVERY}\neval_every = {EVAL_EVERY}\nseed = 7\n"
        f"run_dir = {json.dumps(str(directory / 'run'))}\n"
        "[data]\ntrain = \"train.jsonl\"\n"
        f"heldout = {json.dumps(str(DATA / 'fast_heldout.jsonl'))}\n"
        "[heldout]\nlimit = 4\nmax_tokens = 8\n"
    )
    (directory / "killer.py").write_text(KILLER)
    return path


def _cli(args: list[str], cwd: Path, kill_at: str = "") -> subprocess.CompletedProcess:
    return run_cli(*args, cwd=cwd, env={"TP_KILL_AT": kill_at})


def _steps(rows: list[dict]) -> dict[int, dict]:
    """Metrics rows by step, without timings (the only thing a resume may change)."""
    by_step: dict[int, dict] = {}
    for row in rows:
        assert row["step"] not in by_step, f"step {row['step']} logged twice"
        by_step[row["step"]] = {k: v for k, v in row.items() if not k.startswith("time/")}
    return by_step


def _checkpoint_rows(run_dir: Path) -> list[dict]:
    """Rows of checkpoints.jsonl; fails on a torn or partial line."""
    text = (run_dir / "checkpoints.jsonl").read_text()
    assert text.endswith("\n"), "checkpoints.jsonl ends in a partial line"
    rows = [json.loads(line) for line in text.splitlines()]  # a torn line raises here
    steps = [r["step"] for r in rows]
    assert steps == sorted(set(steps)), f"checkpoint rows out of order or repeated: {steps}"
    plan = BatchPlan(EXAMPLES, BATCH, 7)
    for row in rows:
        assert (row["epoch"], row["batch"]) == plan.position(row["step"])
        assert Path(row["state_path"]).is_dir() and Path(row["sampler_path"]).is_dir()
    return rows


def _final_tensors(run_dir: Path) -> dict[str, object]:
    import torch
    from safetensors.torch import load_file

    last = _checkpoint_rows(run_dir)[-1]
    assert last["step"] == STEPS and last["final"]
    tensors = {}
    for kind in ("state_path", "sampler_path"):
        for key, value in load_file(str(Path(last[kind]) / "adapter_model.safetensors")).items():
            tensors[f"{kind}/{key}"] = value
    optimizer = torch.load(Path(last["state_path"]) / "optimizer.pt", weights_only=True)
    for index, state in optimizer["state"].items():
        for key, value in state.items():
            tensors[f"adam/{index}/{key}"] = value
    return tensors


def _assert_same_run(run_dir: Path, reference: Path) -> None:
    import torch

    got, want = _steps(read_jsonl(run_dir / "metrics.jsonl")), _steps(read_jsonl(reference / "metrics.jsonl"))
    assert sorted(got) == list(range(STEPS + 1))  # every step once, plus the final eval row
    for step in range(STEPS + 1):
        assert got[step] == want[step], f"step {step} differs after resume"
    mine, theirs = _final_tensors(run_dir), _final_tensors(reference)
    assert mine.keys() == theirs.keys() and len(mine) > 10
    for key in mine:
        assert torch.equal(mine[key], theirs[key]), f"{key} is not bit-identical"


def _wait_for_step(process: subprocess.Popen, metrics: Path, step: int, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"run ended early: {process.communicate()}")
        if metrics.is_file() and any(r.get("step", -1) >= step for r in _jsonl_lenient(metrics)):
            return
        time.sleep(0.02)
    raise AssertionError(f"step {step} not reached in {timeout}s")


def _jsonl_lenient(path: Path) -> list[dict]:
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            pass  # being written right now
    return rows


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The uninterrupted run, in this process (through the same CLI entry point): it saves
    one interpreter start-up, which costs more than the run itself."""
    from tinkerplug.cli import main

    directory = tmp_path_factory.mktemp("reference")
    main(["run", str(_config(directory)), "-q"])
    return directory / "run"


@pytest.mark.slow  # real processes: Ctrl-C and kill -9
def test_ctrl_c_then_sigkills_anywhere_resume_to_the_identical_run(tmp_path, reference):
    config = _config(tmp_path)
    run_dir = tmp_path / "run"
    killer = ["-p", str(tmp_path / "killer.py")]

    # 1. Ctrl-C: the step in flight finishes, a checkpoint is saved, the resume command shown.
    process = subprocess.Popen(
        [sys.executable, "-m", "tinkerplug.cli", "run", str(config)],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    _wait_for_step(process, run_dir / "metrics.jsonl", 1)
    process.send_signal(signal.SIGINT)
    _, stderr = process.communicate(timeout=300)
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    stopped_at = _checkpoint_rows(run_dir)[-1]["step"]
    assert 2 <= stopped_at < 12, stderr  # before the first epoch boundary
    assert f"stopped after step {stopped_at}; checkpoint saved" in stderr
    resume = stderr.split("Resume with:\n", 1)[1].splitlines()[0].strip()
    assert shlex.split(resume) == ["tinkerplug", "run", str(config), "--resume"]
    assert [r["step"] for r in read_jsonl(run_dir / "metrics.jsonl")] == list(range(stopped_at))

    # 2. SIGKILL mid-pipeline, between checkpoints: step 14 done, 15 and 16 in flight.
    result = _cli(shlex.split(resume)[1:] + killer, tmp_path, kill_at="step:14")
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert _checkpoint_rows(run_dir)[-1]["step"] == 12  # an epoch boundary

    # 3. SIGKILL right after the step-18 checkpoint row is written.
    result = _cli(shlex.split(resume)[1:] + killer, tmp_path, kill_at="checkpoint:18")
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert "resuming from step 12" in result.stderr
    assert _checkpoint_rows(run_dir)[-1]["step"] == 18

    # 4. SIGKILL mid-checkpoint: step-24 state saved, sampler weights half-written, no row.
    result = _cli(shlex.split(resume)[1:] + killer, tmp_path, kill_at="writing:sampler_weights/step-000024")
    assert result.returncode == -signal.SIGKILL, result.stderr
    assert _checkpoint_rows(run_dir)[-1]["step"] == 18
    assert list(run_dir.glob("checkpoints/*/weights/step-000024"))
    assert list(run_dir.glob("checkpoints/*/sampler_weights/.step-000024.tmp-*"))

    # 5. The last resume runs to the end.
    result = _cli(shlex.split(resume)[1:], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "resuming from step 18" in result.stderr

    rows = _checkpoint_rows(run_dir)
    assert [r["step"] for r in rows] == [stopped_at, *range(SAVE_EVERY, STEPS + 1, SAVE_EVERY)] or [
        r["step"] for r in rows
    ] == list(range(SAVE_EVERY, STEPS + 1, SAVE_EVERY))  # the Ctrl-C row merges when it is step 6
    _assert_same_run(run_dir, reference)


def test_resume_with_a_changed_config_is_refused_and_touches_nothing(tmp_path, reference):
    before = {p: p.stat().st_mtime_ns for p in reference.rglob("*")}
    config = reference.parent / "config.toml"
    result = run_inprocess("run", str(config), "--resume", "--set", "batch_size=8", cwd=reference.parent)
    assert result.returncode == 2
    assert "batch_size: 4 -> 8" in result.stderr and "Traceback" not in result.stderr
    assert {p: p.stat().st_mtime_ns for p in reference.rglob("*")} == before


def test_resuming_a_finished_run_does_nothing(tmp_path, reference):
    before = (reference / "metrics.jsonl").read_text()
    config = reference.parent / "config.toml"
    result = run_inprocess("run", str(config), "--resume", cwd=reference.parent)
    assert result.returncode == 0, result.stderr
    assert "already finished" in result.stderr
    assert (reference / "metrics.jsonl").read_text() == before


# -- the pieces, without a model -------------------------------------------------------------


def test_every_epoch_sees_every_example_once_whatever_the_resume_step():
    """The data order is a function of the step alone (#367: no skipped epoch; #935: no
    replayed batch): each epoch is a fresh permutation, and a resume at any step continues it."""
    plan = BatchPlan(EXAMPLES, BATCH, 7)
    order = [plan.indices(step) for step in range(3 * plan.steps_per_epoch)]
    for epoch in range(3):
        seen = [i for batch in order[epoch * 12 : (epoch + 1) * 12] for i in batch]
        assert sorted(seen) == list(range(EXAMPLES))
    assert order[:12] != order[12:24]  # reshuffled each epoch
    resumed = BatchPlan(EXAMPLES, BATCH, 7)  # a fresh process
    assert [resumed.indices(step) for step in range(12, 36)] == order[12:36]


def test_checkpoints_jsonl_is_replaced_whole_or_not_at_all(tmp_path, monkeypatch):
    from tinkerplug import rundir
    from tinkerplug.hook_types import CheckpointRecord

    record = CheckpointRecord(step=6, epoch=0, batch=6, state_path="s", sampler_path="w", time=1.0)
    rundir.append_checkpoint(tmp_path, record)
    before = (tmp_path / "checkpoints.jsonl").read_bytes()

    def crash(*args):
        raise OSError("crash between writing the temp file and renaming it")

    monkeypatch.setattr(rundir.os, "replace", crash)
    with pytest.raises(OSError):
        rundir.append_checkpoint(tmp_path, CheckpointRecord(12, 1, 0, "s2", "w2", 2.0))
    assert (tmp_path / "checkpoints.jsonl").read_bytes() == before
    assert rundir.last_checkpoint(tmp_path) == record

    # A file torn by some other writer still yields its complete rows.
    (tmp_path / "checkpoints.jsonl").write_bytes(before + b'{"step": 12, "epo')
    assert rundir.last_checkpoint(tmp_path) == record


def test_a_run_dir_is_used_by_one_process_at_a_time(tmp_path):
    from tinkerplug import rundir
    from tinkerplug.errors import TinkerplugError

    first = rundir.create_run_dir(tmp_path / "run", resume=False, resume_command="x")
    with pytest.raises(TinkerplugError, match=f"in use by another tinkerplug process \\(pid {os.getpid()}\\)"):
        rundir.RunDirLock(tmp_path / "run").acquire()
    first.release()
    rundir.RunDirLock(tmp_path / "run").acquire().release()
