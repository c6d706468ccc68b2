"""The ``inspect`` evaluator: real Inspect AI evals (``eval_async``, no mocks) on the sampler
weights of a real run, and the loop's handling of evaluators that raise."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, read_jsonl, run_inprocess, write_config

QUICKSTART_TASK = ROOT / "examples" / "quickstart" / "inspect_task.py"
INSPECT_TABLE = f"""
[inspect]
tasks = [{json.dumps(f"{QUICKSTART_TASK}@subtraction")}]
limit = 8
max_tokens = 8
"""


def inspect_log_dump(path: Path) -> dict:
    """``inspect log dump FILE``: the CLI a user would run, in this interpreter's environment."""
    done = subprocess.run(
        [sys.executable, "-m", "inspect_ai", "log", "dump", str(path)],
        capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


BROKEN_EVALUATOR = '''
import tinkerplug

@tinkerplug.hookimpl
def evaluate(context):
    raise ValueError(f"broken at step {context.step}")
'''


def test_inspect_eval_during_training(tmp_path: Path) -> None:
    """Three evaluators: ``inspect`` (a real Inspect eval of the quickstart task), ``heldout``,
    and a project plugin that raises: it is reported by name and the others' results are kept."""
    (tmp_path / "broken_eval.py").write_text(BROKEN_EVALUATOR)
    config = write_config(tmp_path, INSPECT_TABLE, num_steps=3, plugins=["broken_eval.py"])
    done = run_inprocess("run", str(config), cwd=tmp_path, env={"COLUMNS": "200"})
    assert done.returncode == 0, done.stdout + done.stderr
    output = done.stdout + done.stderr
    assert "plugin 'project:broken_eval' raised in hook 'evaluate': ValueError: broken at step 0" in output
    assert "broken at step 3" in output

    metrics = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert max(r["step"] for r in metrics if "train/loss" in r) == 2  # training went on to the end
    rows = [r for r in metrics if "eval/subtraction/exact/mean" in r]
    assert [r["step"] for r in rows] == [0, 3]  # step 0 and after the last step
    assert all("eval/heldout/exact_match" in r for r in rows)  # evaluators' results are merged
    keys = {k for k in rows[0] if k.startswith("eval/subtraction/")}
    # Both scorers, every metric (the cookbook's bridge keeps only the first scorer).
    assert keys == {
        "eval/subtraction/exact/mean",
        "eval/subtraction/exact/stderr",
        "eval/subtraction/abs_error/mean",
        "eval/subtraction/abs_error/stderr",
    }
    summary = output.split("tinkerplug run summary")[-1]
    assert "eval/subtraction/exact/mean (step 0 → 3)" in summary
    assert "eval/subtraction/abs_error/mean (step 0 → 3)" in summary

    logs = sorted((tmp_path / "run" / "inspect").glob("*.eval"))
    assert len(logs) == 2
    by_step = {}
    for path in logs:
        log = inspect_log_dump(path)
        assert log["status"] == "success"
        assert log["eval"]["model"] == "tinkerplug/tiny-chat"
        assert len(log["samples"]) == 8
        by_step[log["eval"]["metadata"]["step"]] = log
    assert set(by_step) == {0, 3}
    for row in rows:  # metrics.jsonl holds exactly what Inspect computed and logged
        for score in by_step[row["step"]]["results"]["scores"]:
            for name, metric in score["metrics"].items():
                assert row[f"eval/subtraction/{score['name']}/{name}"] == pytest.approx(metric["value"])
    # The replies went through the renderer's parser: no chat-template tokens left in them.
    replies = [s["output"]["choices"][0]["message"]["content"] for s in by_step[3]["samples"]]
    assert not any("<|im_end|>" in str(r) for r in replies)


def test_raising_evaluator_stops_the_run_with_eval_errors_raise(tmp_path: Path) -> None:
    (tmp_path / "broken_eval.py").write_text(BROKEN_EVALUATOR)
    config = write_config(tmp_path, num_steps=2, plugins=["broken_eval.py"], eval_errors="raise")
    done = run_inprocess("run", str(config), cwd=tmp_path)
    assert done.returncode == 3  # PluginError
    assert "plugin 'project:broken_eval' raised in hook 'evaluate': ValueError: broken at step 0" in done.stderr
    assert "Traceback" not in done.stderr


def test_concurrent_evals_in_one_process_take_turns(service, tmp_path: Path) -> None:
    """Inspect refuses a second ``eval_async`` while one runs; the plugin's guard queues it."""
    from tinker_cookbook.renderers import get_renderer

    from tinkerplug_inspect.runner import run_tasks

    training = service.create_lora_training_client("tiny-chat", rank=4, seed=0).result()
    sampler = service.create_sampling_client(model_path=training.save_weights_for_sampler("s").result().path)
    renderer = get_renderer("qwen3_instruct", training.get_tokenizer())

    def one(tag: str):
        return run_tasks(
            [f"{QUICKSTART_TASK}@subtraction"], sampling_client=sampler, renderer=renderer,
            model_name="tiny-chat", log_dir=tmp_path / "logs", limit=3, temperature=0.0, max_tokens=4,
            seed=0, max_connections=64, task_args={}, metadata={}, tags=[tag],
        )

    async def both():
        return await asyncio.gather(one("a"), one("b"))

    first, second = asyncio.run(both())
    assert first == second  # greedy: the same weights score the same
    assert set(first) == {
        "subtraction/exact/mean", "subtraction/exact/stderr",
        "subtraction/abs_error/mean", "subtraction/abs_error/stderr",
    }
    assert len(list((tmp_path / "logs").glob("*.eval"))) == 2


def test_task_specs_are_relative_to_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from tinkerplug.config import load_config
    from tinkerplug.errors import ConfigError
    from tinkerplug.config import PluginSchema
    from tinkerplug_inspect.plugin import task_specs
    from tinkerplug_inspect.settings import InspectSettings

    (tmp_path / "evals").mkdir()
    (tmp_path / "evals" / "t.py").write_text("")
    monkeypatch.chdir(tmp_path / "evals")  # not the config's directory

    def specs(table: str) -> list[str]:
        path = tmp_path / "config.toml"
        path.write_text(f'base_model = "tiny-chat"\n[data]\ntrain = "t.jsonl"\n[inspect]\n{table}\n')
        return task_specs(load_config(path, schema=PluginSchema(sections={"inspect": InspectSettings}, owners={"inspect": "inspect"})))

    assert specs('tasks = ["evals/t.py@mine", "evals/t.py", "inspect_evals/gsm8k"]') == [
        f"{tmp_path / 'evals' / 't.py'}@mine",
        str(tmp_path / "evals" / "t.py"),
        "inspect_evals/gsm8k",  # a registry name, passed on as is
    ]
    assert specs('tasks = ["evals/t.py"]\nenabled = false') == []
    assert specs("") == []
    with pytest.raises(ConfigError, match=r"task file evals/missing.py not found \(looked at .*evals/missing.py\)"):
        specs('tasks = ["evals/missing.py@x"]')


def test_metric_prefixes_are_short_and_distinct() -> None:
    from tinkerplug_inspect.tasks import metric_prefixes

    assert metric_prefixes(["inspect_evals/gsm8k", "a", "b/a", "a"]) == ["gsm8k", "a", "a_2", "a_3"]


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc: a directory nobody can create in")
def test_inspect_data_dir_falls_back_when_home_is_unwritable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Inspect creates trace files under ~/.local/share/inspect_ai and fails without it."""
    import os

    from tinkerplug_inspect.runner import ensure_inspect_data_dir

    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    ensure_inspect_data_dir(tmp_path / "fallback")
    assert "XDG_DATA_HOME" not in os.environ  # a usable home is left alone
    assert (tmp_path / "home" / ".local" / "share" / "inspect_ai" / "traces").is_dir()

    monkeypatch.setenv("HOME", "/proc/no-home")
    ensure_inspect_data_dir(tmp_path / "fallback")
    assert os.environ["XDG_DATA_HOME"] == str(tmp_path / "fallback")
    from platformdirs import user_data_path

    assert user_data_path("inspect_ai") == tmp_path / "fallback" / "inspect_ai"
