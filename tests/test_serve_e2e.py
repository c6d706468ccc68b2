"""Whole programs against ``tinkerplug serve``: ``tinkerplug run`` with ``backend = "tinker"``
(train, held-out and Inspect evals, ``tinker://`` checkpoints, SIGKILL of the run and of the
server, exact resume, export), the cookbook's ``sl_loop`` and the example Tinker script, all
unmodified, reaching the server through the SDK's ``TINKER_BASE_URL``."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import DATA, ROOT, read_jsonl, run_cli, write_config
from test_dropin import SL_LOOP_DRIVER
from test_serve import KEY, MODEL, Server, free_port

pytestmark = pytest.mark.slow

KILLER = '''
import os
import signal

import tinkerplug


@tinkerplug.hookimpl
def log_metrics(step, metrics, run):
    if f"step:{step}" == os.environ.get("TP_KILL_AT"):
        os.kill(os.getpid(), signal.SIGKILL)  # later steps are in flight (pipelined executor)
'''

INSPECT = ROOT / "examples" / "quickstart" / "inspect_task.py"


def _config(directory: Path, backend: str, port: int) -> Path:
    text = (
        f'[tinker]\nbase_url = "http://127.0.0.1:{port}"\n'
        f"[inspect]\ntasks = [{json.dumps(f'{INSPECT}@subtraction')}]\nlimit = 4\nmax_tokens = 8\n"
    )
    return write_config(directory, text, backend=backend, num_steps=8, batch_size=4, save_every=4, eval_every=4, seed=7)


def _steps(run_dir: Path) -> dict[int, dict]:
    rows: dict[int, dict] = {}
    for row in read_jsonl(run_dir / "metrics.jsonl"):
        assert row["step"] not in rows, f"step {row['step']} logged twice"
        rows[row["step"]] = {k: v for k, v in row.items() if not k.startswith("time/")}
    return rows


def test_run_killed_with_its_server_resumes_exactly_and_exports(tmp_path):
    from tinkerplug.cli import main

    port = free_port()
    reference = tmp_path / "reference"
    reference.mkdir()
    main(["run", str(_config(reference, "local", port)), "-q"])  # the same run, uninterrupted, in process

    work = tmp_path / "remote"
    work.mkdir()
    config = _config(work, "tinker", port)
    (work / "killer.py").write_text(KILLER)
    checkpoints = tmp_path / "server-checkpoints"
    env = {"TINKER_API_KEY": KEY}
    server = Server(checkpoints, port=port)
    try:
        killed = run_cli("run", str(config), "-p", str(work / "killer.py"), cwd=work, env={**env, "TP_KILL_AT": "step:5"})
        assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    finally:
        server.stop(signal.SIGKILL)  # the server dies too: only its checkpoint dir survives
    rows = read_jsonl(work / "run" / "checkpoints.jsonl")
    assert [r["step"] for r in rows] == [4]
    assert rows[0]["state_path"].startswith("tinker://") and rows[0]["sampler_path"].startswith("tinker://")

    server = Server(checkpoints, port=port)
    try:
        resumed = run_cli("run", str(config), "--resume", cwd=work, env=env)
        assert resumed.returncode == 0, resumed.stderr[-3000:]
        got, want = _steps(work / "run"), _steps(reference / "run")
        assert sorted(got) == list(range(9)) and got == want  # every loss and eval, exactly
        assert "eval/subtraction/exact/mean" in got[8] and "eval/heldout/exact_match" in got[8]
        final = read_jsonl(work / "run" / "checkpoints.jsonl")[-1]
        assert final["final"] and final["state_path"].startswith("tinker://")

        out = tmp_path / "adapter"
        exported = run_cli("export", str(work / "run"), "--out", str(out), env=env)
        assert exported.returncode == 0, exported.stderr[-3000:]
        _assert_adapter_matches_sampler(out, server, final["sampler_path"])
        _assert_eval_and_chat_match_the_local_run(work / "run", reference / "run", got[8], env)
    finally:
        server.stop()


def _assert_eval_and_chat_match_the_local_run(remote: Path, local: Path, final: dict, env: dict) -> None:
    """``tinkerplug eval`` and ``chat`` on the tinker backend's checkpoint: the run's own final
    evals again, and the same greedy reply as the local backend's identical run."""
    evaluated = run_cli("eval", str(remote), "-p", "no:inspect", env=env)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    saved = json.loads((remote / "evals" / "step-8.json").read_text())["metrics"]
    for key in ("eval/nll/loss", "eval/heldout/exact_match"):
        assert math.isclose(saved[key], final[key], rel_tol=1e-5, abs_tol=1e-9), key
    prompt = json.loads((DATA / "fast_heldout.jsonl").read_text().splitlines()[0])["messages"][0]["content"]
    replies = [
        run_cli("chat", str(run_dir), "--prompt", prompt, "--temperature", "0", "--max-tokens", "8", env=env)
        for run_dir in (remote, local)
    ]
    assert all(r.returncode == 0 for r in replies), [r.stderr[-2000:] for r in replies]
    assert replies[0].stdout == replies[1].stdout and replies[0].stdout.strip()


def _assert_adapter_matches_sampler(adapter: Path, server: Server, sampler_path: str) -> None:
    import tinker
    import torch
    from peft import PeftModel
    from tinker import types
    from transformers import AutoModelForCausalLM

    from tinkerplug.models import shipped_model_dir

    tokens = [5, 17, 23, 42, 9, 11, 30, 7, 64, 3]
    sampler = tinker.ServiceClient(base_url=server.url, api_key=KEY).create_sampling_client(model_path=sampler_path).result()
    served = torch.tensor(sampler.compute_logprobs(types.ModelInput.from_ints(tokens)).result()[1:])
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(shipped_model_dir(MODEL)), str(adapter)).eval()
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([tokens])).logits[0, :-1].float()
    mine = torch.log_softmax(logits, -1).gather(1, torch.tensor(tokens[1:])[:, None])[:, 0]
    torch.testing.assert_close(mine, served, atol=1e-5, rtol=0)


def test_cookbook_sl_loop_and_the_example_script_through_tinker_base_url(tmp_path):
    server = Server(tmp_path / "checkpoints")
    env = {"TINKER_BASE_URL": server.url, "TINKER_API_KEY": KEY}
    try:
        # sl_loop, unchanged; the driver swaps only the dataset and teaches the cookbook where
        # the tiny-chat tokenizer lives (no hub here), as `tinkerplug local` does.
        driver = tmp_path / "driver.py"
        driver.write_text("from tinkerplug_local.patching import _teach_cookbook\n_teach_cookbook()\n" + SL_LOOP_DRIVER)
        log = tmp_path / "log"
        def sl_loop(crash_after: int) -> subprocess.CompletedProcess:
            return subprocess.run(
                [sys.executable, str(driver), MODEL, str(DATA / "fast_train.jsonl"), str(log), "14", str(crash_after)],
                cwd=tmp_path, env={**_env(), **env}, capture_output=True, text=True, timeout=600,
            )

        first = sl_loop(crash_after=11)
        assert first.returncode == 17, first.stderr[-3000:]
        checkpoint = read_jsonl(log / "checkpoints.jsonl")[0]
        assert checkpoint["state_path"].startswith("tinker://")
        second = sl_loop(crash_after=-1)
        assert second.returncode == 0, second.stderr[-3000:]
        assert "Resuming from batch 10" in second.stderr + second.stdout
        metrics = read_jsonl(log / "metrics.jsonl")
        killed = {m["step"]: m["train_mean_nll"] for m in metrics[:12]}
        again = {m["step"]: m["train_mean_nll"] for m in metrics[12:]}
        assert sorted(again) == list(range(10, 14))
        for step in (10, 11):
            assert again[step] == pytest.approx(killed[step], abs=1e-5)

        script = ROOT / "examples" / "tinker-script" / "train.py"
        example = subprocess.run([sys.executable, str(script), "--steps", "20"], env={**_env(), **env},
                                 capture_output=True, text=True, timeout=600, cwd=tmp_path)
        assert example.returncode == 0, example.stderr[-3000:]
        losses = [float(line.split()[-1]) for line in example.stdout.splitlines() if line.startswith("step ")]
        assert len(losses) == 20 and sum(losses[-5:]) / 5 < 0.5 * losses[0], losses
        assert "sample:" in example.stdout
    finally:
        server.stop()


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("TINKER_BASE_URL", "TINKER_API_KEY")}
