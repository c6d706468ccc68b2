"""``tinkerplug.testing``, the harness plugin authors test with: what a call returns, and that
nothing of one call (plugins, environment, cwd, sys.path, logging, commands) reaches the next."""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

import pytest

from tinkerplug.testing import TinkerplugRunner, first_letter_records

LEAKY = '''
import logging, os, signal, sys
import tinkerplug

os.environ["LEAKY_LOADED"] = "1"
os.chdir(os.environ["LEAKY_CHDIR"])
sys.path.append("/leaky/path")
logging.getLogger().addHandler(logging.StreamHandler())
logging.getLogger().setLevel(logging.DEBUG)
signal.signal(signal.SIGINT, signal.SIG_IGN)


@tinkerplug.hookimpl
def lr_for_step(step):
    return 0.0123
'''


def test_a_run_returns_exit_code_output_run_dir_metrics_and_checkpoints(tinkerplug_runner):
    config = tinkerplug_runner.write_config(num_steps=3, save_every=2)
    result = tinkerplug_runner.run(config, "-q", "--set", "run_dir=elsewhere")
    assert result.exit_code == result.returncode == 0, result.output
    assert result.run_dir == tinkerplug_runner.path / "elsewhere"  # --set wins over the file's ./run
    assert [row["step"] for row in result.train_rows] == [0, 1, 2]
    assert all(row["train/loss"] > 0 for row in result.train_rows)
    assert [row["step"] for row in result.checkpoints] == [2, 3] and result.checkpoints[-1]["final"]
    assert Path(result.checkpoints[-1]["state_path"]).is_dir()
    assert "run summary" in result.stderr and result.stderr in result.output and result.stdout == ""


def test_errors_and_json_output(tinkerplug_runner):
    bad = tinkerplug_runner.run(tinkerplug_runner.write_config(learning_rate=-1))
    assert bad.exit_code == 2 and "learning_rate" in bad.stderr and "Traceback" not in bad.output
    assert bad.metrics == [] and not (tinkerplug_runner.path / "run").exists()
    rows = tinkerplug_runner.invoke("plugins", "--json").json()
    assert "cookbook" in {row["name"] for row in rows}
    missing = tinkerplug_runner.invoke("no-such-command")
    assert missing.exit_code == 2 and "No such command" in missing.stderr


def test_nothing_of_one_call_reaches_the_next(tinkerplug_runner, tmp_path_factory):
    """A plugin that changes the process: env, cwd, sys.path, logging, SIGINT, and itself."""
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    plugin = tinkerplug_runner.write_plugin("leaky", LEAKY)
    config = tinkerplug_runner.write_config()
    root = logging.getLogger()
    before = (dict(os.environ), os.getcwd(), list(sys.path), list(root.handlers), root.level, signal.getsignal(signal.SIGINT))

    loaded = tinkerplug_runner.invoke("plugins", "--hook", "lr_for_step", "-p", str(plugin), env={"LEAKY_CHDIR": str(elsewhere), "HOME": None})
    assert loaded.exit_code == 0, loaded.output
    assert "project:leaky" in loaded.stdout
    after = (dict(os.environ), os.getcwd(), list(sys.path), list(root.handlers), root.level, signal.getsignal(signal.SIGINT))
    assert after == before
    assert "tinkerplug_project_leaky" not in sys.modules  # unloaded: the next call does not see it
    plain = tinkerplug_runner.invoke("plugins", "--hook", "lr_for_step")
    assert "project:leaky" not in plain.stdout


def test_an_installed_distribution_on_syspath_prepend_is_found_and_then_forgotten(tinkerplug_runner, tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    info = site / "tinkerplug_greet-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tinkerplug-greet\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[tinkerplug]\ngreet = tinkerplug_greet_impl\n")
    (site / "tinkerplug_greet_impl.py").write_text(
        "import click\nimport tinkerplug\n\n@click.command()\ndef greet():\n    '''Greet.'''\n    click.echo('hi')\n\n"
        "@tinkerplug.hookimpl\ndef register_commands(cli):\n    cli.add_command(greet)\n"
    )
    from tinkerplug.cli import cli

    tinkerplug_runner.syspath_prepend(site)
    assert tinkerplug_runner.invoke("greet").stdout == "hi\n"
    assert "greet" not in cli.commands and "tinkerplug_greet_impl" not in sys.modules and str(site) not in sys.path
    assert TinkerplugRunner(tinkerplug_runner.path).invoke("greet").exit_code == 2  # another runner: not installed
    config, plugins = tinkerplug_runner.load(tinkerplug_runner.write_config())
    assert "greet" in plugins.info and str(site) in sys.path  # load: importable until cleanup
    tinkerplug_runner.cleanup()
    assert str(site) not in sys.path and "tinkerplug_greet_impl" not in sys.modules


def test_a_process_answers_as_the_in_process_call_does(tinkerplug_runner):
    config = tinkerplug_runner.write_config(num_steps=1)
    in_process = tinkerplug_runner.invoke("run", str(config), "-q", "--set", "batch_size=0")
    child = tinkerplug_runner.run_process("run", str(config), "-q", "--set", "batch_size=0")
    assert in_process.exit_code == child.exit_code == 2
    assert in_process.stderr == child.stderr and child.run_dir == in_process.run_dir


def test_write_data_default_is_a_task_the_model_can_learn():
    records = first_letter_records(5)
    assert records == first_letter_records(5)  # deterministic
    for record in records:
        user, assistant = record["messages"]
        assert assistant["content"] == user["content"].removeprefix("First letter: ")[0]


def test_the_fixture_is_registered_for_pytest(pytestconfig):
    assert pytestconfig.pluginmanager.get_plugin("tinkerplug.testing") is not None


@pytest.mark.parametrize("code, expected", [(None, 0), (0, 0), (3, 3), ("message", 1)])
def test_sys_exit_arguments_become_exit_codes(tinkerplug_runner, monkeypatch, code, expected):
    import tinkerplug.cli

    monkeypatch.setattr(tinkerplug.cli, "main", lambda argv: sys.exit(code))
    result = tinkerplug_runner.invoke("anything")
    assert result.exit_code == expected
    assert ("message" in result.stderr) == (code == "message")
