"""Plugin state on registered objects (pytest's pattern): a plugin registers an object for one
run (``run.plugins.register_for_run``) and keeps the run's state on it; the core unregisters it
after ``on_run_end``, so the next run in the same process starts clean."""

from __future__ import annotations

import asyncio

import pytest

from conftest import read_jsonl, write_config

PLUGIN = '''
import tinkerplug

SEEN = []


class Counter:
    def __init__(self, run_dir):
        self.run_dir, self.steps = run_dir, []

    @tinkerplug.hookimpl
    def log_metrics(self, step, metrics):
        if "train/loss" in metrics:
            self.steps.append(step)

    @tinkerplug.hookimpl
    def on_run_end(self):
        SEEN.append((self.run_dir.name, self.steps))


@tinkerplug.hookimpl
def on_run_start(run):
    run.plugins.register_for_run(Counter(run.run_dir), "counter:run")
'''


@pytest.mark.slow
def test_a_run_object_sees_its_run_and_is_gone_after_it(tmp_path):
    from tinkerplug.cli import load_run_config
    from tinkerplug.training import train

    (tmp_path / "counter.py").write_text(PLUGIN)
    path = write_config(tmp_path, num_steps=3, batch_size=4)
    overrides = ("terminal.quiet=true", "heldout.enabled=false")
    config, plugins = load_run_config(str(path), (f"run_dir={tmp_path / 'a'}", *overrides), (str(tmp_path / "counter.py"),))
    for name in ("a", "b"):  # the same plugins again: the name is free once the first run ended
        asyncio.run(train(config.model_copy(update={"run_dir": tmp_path / name}), plugins))
        assert plugins.pm.get_plugin("counter:run") is None and plugins.pm.get_plugin("jsonl:metrics-file") is None
        rows = read_jsonl(tmp_path / name / "metrics.jsonl")  # the first-party metrics file: a run object too
        assert [row["step"] for row in rows if "train/loss" in row] == [0, 1, 2]
    import tinkerplug_project_counter

    assert tinkerplug_project_counter.SEEN == [("a", [0, 1, 2]), ("b", [0, 1, 2])]
