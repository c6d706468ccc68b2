"""The run as phases and what plugins add to it: the one exit path (``on_run_end`` after an
error), commands and backends from plugins, result keys of plugin tables, checkpoint retention.

Commands run in this process (``tinkerplug.testing``): none of these is about the process."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from conftest import read_jsonl, run_inprocess, write_config

RECORD_END = """
import json, os
import tinkerplug

@tinkerplug.hookimpl
def on_run_end(run, summary):
    with open(os.environ["END_FILE"], "w") as f:
        json.dump(dict(summary), f)
"""


def test_a_plugin_error_mid_run_exits_3_and_on_run_end_still_sees_it(tmp_path):
    plugin = tmp_path / "flaky_lr.py"
    plugin.write_text(
        RECORD_END
        + "\n@tinkerplug.hookimpl\ndef lr_for_step(step):\n"
        "    if step == 3:\n        raise RuntimeError('schedule service is down')\n"
    )
    config = write_config(tmp_path, executor="sync")
    end = tmp_path / "end.json"
    result = run_inprocess("run", str(config), "-p", str(plugin), env={"END_FILE": str(end)})
    assert result.returncode == 3, result.stderr
    assert "plugin 'project:flaky_lr' raised in hook 'lr_for_step'" in result.stderr
    assert "Traceback" not in result.stderr
    summary = json.loads(end.read_text())
    assert "schedule service is down" in summary["error"] and summary["steps_run"] == 3
    # the loggers' own on_run_end ran too: every finished step is on disk
    assert [row["step"] for row in read_jsonl(tmp_path / "run" / "metrics.jsonl")] == [0, 1, 2]


BACKEND = """
from pathlib import Path
import tinkerplug

used = []

@tinkerplug.hookimpl
def register_backends(register):
    register("mirror", "the local backend, counting the service clients it makes")

@tinkerplug.hookimpl
def create_service_client(config, run_dir):
    if config.resolved_backend != "mirror":
        return None
    from tinkerplug_local import ServiceClient

    Path(run_dir).parent.joinpath("mirror-used").write_text("yes")
    return ServiceClient(checkpoint_dir=Path(run_dir) / "checkpoints")
"""


def test_a_project_file_adds_a_backend(tmp_path):
    (tmp_path / "mirror.py").write_text(BACKEND)
    config = write_config(tmp_path, backend="mirror", num_steps=2, plugins=["./mirror.py"])
    result = run_inprocess("run", str(config), "-q")
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "mirror-used").read_text() == "yes"
    assert json.loads((tmp_path / "run" / "config.json").read_text())["backend"] == "mirror"

    typo = write_config(tmp_path, backend="miror", plugins=["./mirror.py"])
    result = run_inprocess("run", str(typo))
    assert result.returncode == 2
    assert "backend 'miror' is not a registered backend; did you mean 'mirror'?" in result.stderr
    assert "backends: local, mirror, tinker" in result.stderr


def eval_weights(run_dir: Path) -> list[str]:
    return sorted(p.name for p in (run_dir / "checkpoints").rglob("eval-*"))


def test_sampler_weights_are_saved_only_for_an_evaluator_that_samples(tmp_path):
    config = write_config(tmp_path, num_steps=2, text="enabled = false\n")  # [heldout]: the only sampler
    result = run_inprocess("run", str(config), "-p", "no:terminal")
    assert result.returncode == 0
    assert eval_weights(tmp_path / "run") == []
    assert "tinkerplug:" not in result.stderr and "summary" not in result.stderr  # the reporter is off


def test_a_changed_plugin_result_key_refuses_the_resume(tmp_path):
    config = write_config(tmp_path, num_steps=2)
    first = run_inprocess("run", str(config))
    assert first.returncode == 0
    assert eval_weights(tmp_path / "run") == ["eval-000000", "eval-000002"]  # [heldout] sampled at both
    # the terminal plugin reports each event once
    for line in ("tinkerplug: data: ", "eval @ step 0:", "eval @ step 2:", "checkpoint @ step 2:", "run summary"):
        assert first.stderr.count(line) == 1, (line, first.stderr)
    result = run_inprocess("run", str(config), "--resume", "--set", "local.dtype=float32")
    assert result.returncode == 2
    assert 'local.dtype: "auto" -> "float32"' in result.stderr
    # device does not change what is computed: not a result key
    assert run_inprocess("run", str(config), "--resume", "--set", "local.device=cpu").returncode == 0


def test_an_installed_plugin_adds_a_command(tmp_path):
    site = tmp_path / "site"
    info = site / "tinkerplug_hello-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tinkerplug-hello\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[tinkerplug]\nhello = tinkerplug_hello\n")
    (site / "tinkerplug_hello.py").write_text(
        "import click\nimport tinkerplug\n\n"
        "@click.command()\n@click.argument('name')\ndef hello(name):\n    '''Say hello.'''\n"
        "    click.echo(f'hello {name}')\n\n"
        "@tinkerplug.hookimpl\ndef register_commands(cli):\n    cli.add_command(hello)\n"
    )
    env = {"PYTHONPATH": os.pathsep.join([str(site), *sys.path])}
    assert "Say hello." in run_inprocess("--help", env=env).stdout
    assert run_inprocess("hello", "world", env=env).stdout == "hello world\n"
    listed = json.loads(run_inprocess("plugins", "--json", "--hook", "register_commands", env=env).stdout)
    assert [row["name"] for row in listed] == ["hello", "local", "eval", "commands", "chat"]


def test_retention_keeps_the_last_and_every_mth_and_resume_still_works(tmp_path):
    crash = tmp_path / "crash.py"
    crash.write_text(
        "import tinkerplug\n\n@tinkerplug.hookimpl\ndef lr_for_step(step):\n"
        "    if step == 9:\n        raise RuntimeError('preempted')\n"
    )
    config = write_config(tmp_path, save_every=2, executor="sync", text="[retention]\nkeep_last = 2\nkeep_every = 4\n")
    first = run_inprocess("run", str(config), "-q", "-p", str(crash))
    assert first.returncode == 3
    run_dir = tmp_path / "run"

    def live() -> list[int]:
        return [row["step"] for row in read_jsonl(run_dir / "checkpoints.jsonl") if not row.get("removed")]

    rows = read_jsonl(run_dir / "checkpoints.jsonl")
    assert [row["step"] for row in rows] == [2, 4, 6, 8]  # the removed row stays, marked
    assert live() == [4, 6, 8]
    removed = rows[0]
    assert removed["removed"] and not Path(removed["state_path"]).exists() and not Path(removed["sampler_path"]).exists()

    resumed = run_inprocess("run", str(config), "-q", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert live() == [4, 8, 10, 12] and read_jsonl(run_dir / "checkpoints.jsonl")[-1]["final"]
    assert [row["step"] for row in read_jsonl(run_dir / "metrics.jsonl")][:12] == list(range(12))
    for row in read_jsonl(run_dir / "checkpoints.jsonl"):
        assert Path(row["state_path"]).exists() == (not row.get("removed"))


def test_evaluate_checkpoint_runs_the_evaluators_on_a_saved_checkpoint(tmp_path):
    """The eval step without training (what `tinkerplug eval RUN_DIR --step N` calls): the
    checkpoint's own sampler weights are sampled, nothing new is saved."""
    import asyncio

    from tinkerplug.evaluation import evaluate_checkpoint

    config = write_config(tmp_path, num_steps=2, save_every=1)
    assert run_inprocess("run", str(config), "-q").returncode == 0
    before = eval_weights(tmp_path / "run")
    record, metrics = asyncio.run(evaluate_checkpoint(tmp_path / "run", step=1))
    assert record.step == 1 and metrics["eval/heldout/n"] > 0
    assert 0.0 <= metrics["eval/heldout/exact_match"] <= 1.0 and "time/eval/heldout_s" in metrics
    assert eval_weights(tmp_path / "run") == before


def test_a_plugin_failing_to_add_its_command_does_not_take_the_cli_down(tmp_path):
    bad = tmp_path / "site" / "tinkerplug_badcmd.py"
    info = tmp_path / "site" / "tinkerplug_badcmd-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tinkerplug-badcmd\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[tinkerplug]\nbadcmd = tinkerplug_badcmd\n")
    bad.write_text("import tinkerplug\n\n@tinkerplug.hookimpl\ndef register_commands(cli):\n    raise KeyError('oops')\n")
    result = run_inprocess("--help", env={"PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), *sys.path])})
    assert result.returncode == 0 and "export" in result.stdout and "local" in result.stdout
    assert "warning: plugin 'badcmd' raised in hook 'register_commands': KeyError: 'oops'; its commands are missing" in result.stderr


def test_the_plugin_manager_has_one_method_per_hook():
    from tinkerplug.hook_docs import hook_names
    from tinkerplug.plugins import Plugins

    # evaluate is called one plugin at a time (each evaluator isolated): its method hands out the calls
    methods = {name: {"evaluate": "evaluators"}.get(name, name) for name in hook_names()}
    assert [hook for hook, method in methods.items() if not callable(getattr(Plugins, method, None))] == []
