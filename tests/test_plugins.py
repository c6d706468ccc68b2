"""Plugins as users meet them: list, install, override, disable, and the two metrics loggers.

Everything goes through the real ``tinkerplug`` command, in this process (``tinkerplug.testing``)
unless a process is the point (start-up imports, the example package's own pytest run). The
third-party example package is installed into a temporary site directory put on ``sys.path``
(or ``PYTHONPATH``), so the test venv is never modified.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import struct
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from conftest import ROOT, read_jsonl, write_config
from tinkerplug.testing import TinkerplugRunner

EXAMPLE_PACKAGE = ROOT / "examples" / "plugin-example"
OVERRIDE_EXAMPLE = ROOT / "examples" / "project-override"
# Never imported by the light commands. pydantic too: building the plugins' settings models
# at import cost ~0.3 s CPU, most of `tinkerplug plugins`; they load with a run's config.
HEAVY = ("torch", "transformers", "tinker", "tinker_cookbook", "peft", "inspect_ai", "tensorboardX", "pydantic")
QUICK = ("--set", "heldout.enabled=false", "-q")  # runs that check no evaluator skip the held-out eval


def plugins_json(runner: TinkerplugRunner, *args: str, cwd: Path | None = None) -> list[dict]:
    result = runner.invoke("plugins", "--json", *args, cwd=cwd)
    assert result.exit_code == 0, result.output
    return result.json()


def first_party_names() -> set[str]:
    return {
        ep.name
        for ep in importlib.metadata.entry_points(group="tinkerplug")
        if ep.dist is not None and ep.dist.name == "tinkerplug"
    }


def write_plugin(directory: Path, name: str, body: str) -> Path:
    path = directory / f"{name}.py"
    path.write_text("import tinkerplug\n\n" + body)
    return path


CONSTANT_LR = """
@tinkerplug.hookimpl
def lr_for_step(step, num_steps, config):
    return 0.0421
"""


@pytest.fixture(scope="module")
def with_example_installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``examples/plugin-example`` installed into a temporary site dir, as pip lays out a
    distribution (its package and a ``.dist-info`` with the name, version and entry points its
    ``pyproject.toml`` declares; pip itself would need ``wheel`` in venvs with an old
    setuptools). Returns the site dir: put it on ``sys.path`` / ``PYTHONPATH``."""
    project = tomllib.loads((EXAMPLE_PACKAGE / "pyproject.toml").read_text())["project"]
    site = tmp_path_factory.mktemp("plugin-example") / "site"
    for package in tomllib.loads((EXAMPLE_PACKAGE / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]:
        shutil.copytree(EXAMPLE_PACKAGE / package, site / package, ignore=shutil.ignore_patterns("__pycache__"))
    info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    groups = project["entry-points"]
    (info / "entry_points.txt").write_text(
        "".join(f"[{group}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) for group, eps in groups.items())
    )
    return site


@pytest.fixture
def runner(tinkerplug_runner, with_example_installed):
    """The in-process harness with the example plugin installed."""
    tinkerplug_runner.syspath_prepend(with_example_installed)
    return tinkerplug_runner


def example_env(site: Path) -> dict[str, str]:
    """The environment of a child process that sees the installed example."""
    return {"PYTHONPATH": os.pathsep.join(p for p in (str(site), os.environ.get("PYTHONPATH", "")) if p)}


# -- listing ---------------------------------------------------------------------------------


def test_plugins_lists_project_then_third_party_then_first_party(runner, tmp_path):
    project = write_plugin(tmp_path, "my_lr", CONSTANT_LR)
    rows = plugins_json(runner, "-p", str(project))
    by_name = {row["name"]: row for row in rows}

    assert by_name["project:my_lr"] == {
        "name": "project:my_lr", "kind": "project", "distribution": None, "version": None,
        "source": str(project.resolve()), "hooks": ["lr_for_step"],
    }
    assert by_name["step_decay"]["kind"] == "third-party"
    assert (by_name["step_decay"]["distribution"], by_name["step_decay"]["version"]) == ("tinkerplug-step-decay", "0.1.0")
    assert by_name["step_decay"]["hooks"] == ["lr_for_step", "register_config_sections"]
    assert {r["name"] for r in rows if r["kind"] == "first-party"} == first_party_names()
    assert all(r["distribution"] == "tinkerplug" and r["hooks"] for r in rows if r["kind"] == "first-party")
    # call order: project files first, then third-party, then first-party
    rank = {"project": 0, "third-party": 1, "first-party": 2}
    assert [rank[r["kind"]] for r in rows] == sorted(rank[r["kind"]] for r in rows)

    order = [r["name"] for r in plugins_json(runner, "--hook", "lr_for_step", "-p", str(project))]
    assert order == ["project:my_lr", "step_decay", "schedule"]

    text = runner.invoke("plugins", "-p", str(project))
    assert text.exit_code == 0, text.output
    assert "tinkerplug-step-decay 0.1.0" in text.stdout and "project:my_lr" in text.stdout


def test_firstresult_precedence_project_over_installed_over_first_party(runner, tmp_path):
    """The same ``lr_for_step`` question, answered by whichever plugin is called first."""
    project = write_plugin(tmp_path, "my_lr", CONSTANT_LR)
    step_decay = "[step_decay]\nenabled = true\nmilestones = [0.5]\ngamma = 0.1\n"
    values = dict(learning_rate=1e-3, warmup_steps=0, num_steps=10)
    (tmp_path / "with_table").mkdir()
    (tmp_path / "plain").mkdir()
    with_table = write_config(tmp_path / "with_table", step_decay, **values)
    plain = write_config(tmp_path / "plain", **values)
    setups = {  # label: (config, --set overrides, -p options)
        "project file": (with_table, [], [str(project)]),
        "installed": (with_table, [], []),
        "installed, off": (with_table, ["step_decay.enabled=false"], []),  # returns None: passes on
        "installed, disabled": (plain, [], ["no:step_decay"]),
    }
    answers = {}
    for label, (path, overrides, options) in setups.items():
        config, plugins = runner.load(path, *overrides, plugin_options=options)
        answers[label] = plugins.first("lr_for_step", step=7, num_steps=10, config=config)
    from tinkerplug_schedule.plugin import schedule

    cosine = schedule(7, 10, 1e-3, 0.0, 0, "cosine")
    assert answers == pytest.approx(
        {"project file": 0.0421, "installed": 1e-4, "installed, off": cosine, "installed, disabled": cosine}
    )
    assert cosine != pytest.approx(1e-4)


def test_plugins_with_config_shows_its_project_files_relative_to_the_config(tinkerplug_runner):
    runner = tinkerplug_runner
    rows = plugins_json(runner, "--hook", "lr_for_step", "-c", str(OVERRIDE_EXAMPLE / "config.toml"))
    assert [r["name"] for r in rows] == ["project:my_hooks", "schedule"]
    assert rows[0]["source"] == str((OVERRIDE_EXAMPLE / "my_hooks.py").resolve())
    # the same file with -p, relative to the current directory
    rows = plugins_json(runner, "--hook", "lr_for_step", "-p", "my_hooks.py", cwd=OVERRIDE_EXAMPLE)
    assert [r["name"] for r in rows] == ["project:my_hooks", "schedule"]
    missing = runner.invoke("plugins", "-c", "missing.toml")
    assert missing.exit_code == 2 and "config file missing.toml not found" in missing.stderr


def test_hooks_command_prints_every_hookspec(tinkerplug_runner):
    from tinkerplug.hook_docs import hook_signature, hookspec_functions

    result = tinkerplug_runner.invoke("hooks")
    assert result.exit_code == 0, result.output
    for name, func in hookspec_functions():
        assert hook_signature(name, func) in result.stdout
    one = tinkerplug_runner.invoke("hooks", "lr_for_step")
    assert one.stdout.startswith("lr_for_step(step: int, num_steps: int, config: RunConfig) -> float | None  [firstresult]")
    assert "Stops at first non-None result" in " ".join(one.stdout.split()) and "evaluate(" not in one.stdout
    missing = tinkerplug_runner.invoke("hooks", "lr_for_stpe")
    assert missing.exit_code != 0 and "no hook named 'lr_for_stpe'" in missing.stderr


# -- a third-party package and a project file, in real runs ----------------------------------


def test_installed_plugin_takes_effect_in_a_run(runner, tmp_path):
    config = write_config(tmp_path, "[step_decay]\nenabled = true\nmilestones = [0.5, 0.75]\ngamma = 0.1\n",
                          num_steps=8, batch_size=4, learning_rate=1e-3, warmup_steps=0)
    result = runner.run(config, *QUICK)
    assert result.exit_code == 0, result.output
    rows = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if "train/loss" in r]
    assert [r["lr"] for r in rows] == pytest.approx([1e-3] * 4 + [1e-4] * 2 + [1e-5] * 2)
    assert rows[-1]["train/loss"] < rows[0]["train/loss"]
    assert not (tmp_path / "run" / "tensorboard").exists()  # the TensorBoard logger is opt-in


@pytest.mark.slow  # a pytest run of its own: the package's tests as its author runs them
def test_the_example_package_own_tests_pass_once_installed(with_example_installed):
    """Its tests are the docs' advice on testing a plugin with ``tinkerplug.testing``."""
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--rootdir", str(EXAMPLE_PACKAGE),
         str(EXAMPLE_PACKAGE / "tests")],
        capture_output=True, text=True, timeout=300, env={**os.environ, **example_env(with_example_installed)},
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 passed" in result.stdout


@pytest.fixture(scope="module")
def override_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """examples/project-override as shipped (its config names ./my_hooks.py), shortened, with
    the TensorBoard logger on."""
    runner = TinkerplugRunner(tmp_path_factory.mktemp("override"))
    run_dir = runner.path / "run"
    result = runner.run(
        OVERRIDE_EXAMPLE / "config.toml", *QUICK,
        "--set", f"run_dir={run_dir}", "--set", "num_steps=8", "--set", "warmup_steps=2",
        "--set", "batch_size=4", "--set", "eval_every=0", "--set", "tensorboard.enabled=true",
    )
    assert result.exit_code == 0, result.output
    return run_dir


def test_project_file_overrides_one_hook_in_a_run(override_run):
    rows = [r for r in read_jsonl(override_run / "metrics.jsonl") if "train/loss" in r]
    # warmup-stable-decay from my_hooks.py: 2 warmup steps, decay over the last quarter to min_lr
    assert [r["lr"] for r in rows] == pytest.approx([5e-4, 1e-3, 1e-3, 1e-3, 1e-3, 1e-3, 5.5e-4, 1e-4])
    config = json.loads((override_run / "config.json").read_text())
    assert config["plugins"] == ["./my_hooks.py"]


def read_tensorboard_scalars(log_dir: Path) -> dict[str, dict[int, float]]:
    """Parse the event files (TFRecord framing: length, crc, Event proto, crc)."""
    from tensorboardX.proto.event_pb2 import Event

    scalars: dict[str, dict[int, float]] = {}
    for file in sorted(log_dir.glob("events.out.tfevents.*")):
        data = file.read_bytes()
        offset = 0
        while offset < len(data):
            (length,) = struct.unpack("<Q", data[offset : offset + 8])
            event = Event.FromString(data[offset + 12 : offset + 12 + length])
            offset += 12 + length + 4
            for value in event.summary.value:
                if value.HasField("simple_value"):
                    scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    return scalars


def test_tensorboard_logger_records_what_the_jsonl_logger_records(override_run):
    rows = read_jsonl(override_run / "metrics.jsonl")
    scalars = read_tensorboard_scalars(override_run / "tensorboard")
    for key in ("train/loss", "lr", "train/trained_tokens"):
        expected = {r["step"]: r[key] for r in rows if r.get(key) is not None}
        assert sorted(scalars[key]) == list(range(8))
        assert scalars[key] == pytest.approx(expected, rel=1e-6), key


def test_tensorboard_enabled_without_tensorboardx_says_how_to_install(tmp_path, monkeypatch):
    from tinkerplug.cli import load_run_config
    from tinkerplug.hook_types import RunContext
    from tinkerplug.errors import PluginError

    config, plugins = load_run_config(str(write_config(tmp_path)), ("tensorboard.enabled=true",), ())
    monkeypatch.setitem(sys.modules, "tensorboardX", None)  # makes `import tensorboardX` fail
    run = RunContext(config=config, run_dir=tmp_path, plugins=plugins)
    with pytest.raises(PluginError, match="tensorboardX is not installed") as caught:
        plugins.pm.get_plugin("tensorboard").on_run_start(run=run)
    assert "tinkerplug[tensorboard]" in str(caught.value)


# -- disabling ---------------------------------------------------------------------------------


def test_disabling_the_renderer_plugin_fails_before_loading_anything(tinkerplug_runner, tmp_path):
    config = write_config(tmp_path)
    result = tinkerplug_runner.run(config, "-p", "no:cookbook")
    assert result.exit_code == 3
    assert "no plugin resolves the chat renderer (hook resolve_renderer) (disabled: cookbook)" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "run").exists()
    # the same from the config file
    config = write_config(tmp_path, disable_plugins=["cookbook"])
    result = tinkerplug_runner.run(config)
    assert result.exit_code == 3 and "(disabled: cookbook)" in result.stderr


def test_disabling_the_backend_in_use_names_it(tinkerplug_runner, tmp_path):
    config = write_config(tmp_path, backend="local")
    result = tinkerplug_runner.run(config, "-p", "no:local")
    assert result.exit_code == 3  # a plugin problem, as for a disabled renderer; 4 is for backend failures
    assert "no plugin provides backend 'local' (disabled: local)" in result.stderr
    assert "Traceback" not in result.stderr


def test_disabling_an_unknown_plugin_suggests_the_name(tinkerplug_runner):
    result = tinkerplug_runner.invoke("plugins", "-p", "no:cokbook")
    assert result.exit_code == 3
    assert "cannot disable unknown plugin(s): cokbook (did you mean no:cookbook?)" in result.stderr
    rows = plugins_json(tinkerplug_runner, "-p", "no:heldout", "-p", "no:tensorboard")
    assert {r["name"] for r in rows} == first_party_names() - {"heldout", "tensorboard"}


# -- rejected plugins ---------------------------------------------------------------------------


def test_unknown_hook_name_is_rejected_at_load_naming_the_plugin(tinkerplug_runner, tmp_path):
    typo = write_plugin(tmp_path, "typo", "@tinkerplug.hookimpl\ndef lr_for_stpe(step):\n    return 1.0\n")
    for args in (("plugins", "-p", str(typo)), ("run", str(write_config(tmp_path)), "-p", str(typo))):
        result = tinkerplug_runner.invoke(*args)
        assert result.exit_code == 3, result.output
        assert "plugin 'project:typo'" in result.stderr
        assert "unknown hook 'lr_for_stpe'; did you mean 'lr_for_step'?" in result.stderr
        assert "Traceback" not in result.stderr


def test_hookimpl_with_an_argument_the_spec_lacks_is_rejected(tinkerplug_runner, tmp_path):
    bad = write_plugin(tmp_path, "bad_args", "@tinkerplug.hookimpl\ndef lr_for_step(step, total_steps):\n    return 1.0\n")
    result = tinkerplug_runner.invoke("plugins", "-p", str(bad))
    assert result.exit_code == 3
    assert "plugin 'project:bad_args'" in result.stderr and "total_steps" in result.stderr


def test_a_wrapper_wraps_a_fan_out_hook(tmp_path):
    """Fan-out hooks go through pluggy, so a wrapper sees the call and every result."""
    from tinkerplug.plugin_loader import load_plugins

    wrapper = write_plugin(
        tmp_path, "wrap",
        "seen = []\n\n"
        "@tinkerplug.hookimpl(wrapper=True)\ndef log_metrics(step, metrics, run):\n"
        "    results = yield\n    seen.append((step, len(results)))\n    return results\n\n"
        "@tinkerplug.hookimpl(specname='log_metrics')\ndef log_row(step):\n    return 'logged'\n",
    )
    plugins = load_plugins(cli_files=[str(wrapper)], disabled=["jsonl", "tensorboard", "terminal", "wandb"])
    plugins.log_metrics(5, {}, None)
    assert sys.modules["tinkerplug_project_wrap"].seen == [(5, 1)]


def test_wrapper_on_evaluate_is_rejected(tinkerplug_runner, tmp_path):
    """Evaluators are called one by one (a failing one must not stop the others): no wrapping."""
    wrapper = write_plugin(
        tmp_path, "wrap", "@tinkerplug.hookimpl(wrapper=True)\ndef evaluate(context):\n    return (yield)\n"
    )
    result = tinkerplug_runner.invoke("plugins", "-p", str(wrapper))
    assert result.exit_code == 3 and "plugin 'project:wrap'" in result.stderr and "evaluate" in result.stderr


def test_a_raising_hook_is_reported_by_plugin_name(tmp_path):
    from tinkerplug.cli import load_run_config
    from tinkerplug.errors import PluginError

    broken = write_plugin(tmp_path, "broken", "@tinkerplug.hookimpl\ndef lr_for_step(step, num_steps):\n    return 1 / 0\n")
    config, plugins = load_run_config(str(write_config(tmp_path)), (), (str(broken),))
    with pytest.raises(PluginError, match=r"plugin 'project:broken' raised in hook 'lr_for_step': ZeroDivisionError"):
        plugins.first("lr_for_step", step=0, num_steps=10, config=config)


# -- start-up ----------------------------------------------------------------------------------


@pytest.mark.parametrize("args", [["--help"], ["plugins"], ["plugins", "--hook", "evaluate"], ["hooks"]])
def test_light_commands_import_no_heavy_package(args, with_example_installed):
    """Every plugin module is imported at start-up, so each must keep heavy imports lazy."""
    script = (
        "import json, sys\n"
        "from tinkerplug.cli import main\n"
        "try:\n"
        f"    main({args!r})\n"
        "except SystemExit as exc:\n"
        "    assert not exc.code, exc.code\n"
        f"print(json.dumps(sorted(m for m in {HEAVY!r} if m in sys.modules)))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
        env={**os.environ, **example_env(with_example_installed)},
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout.strip().splitlines()[-1]) == []


def test_async_hook_other_than_evaluate_is_refused_not_silently_skipped(tmp_path):
    from tinkerplug.errors import PluginError
    from tinkerplug.plugin_loader import load_plugins

    async_logger = write_plugin(tmp_path, "async_logger", "@tinkerplug.hookimpl\nasync def log_metrics(step, metrics):\n    pass\n")
    plugins = load_plugins(cli_files=[str(async_logger)], disabled=["jsonl", "tensorboard", "terminal", "wandb"])
    with pytest.raises(PluginError, match=r"plugin 'project:async_logger': hook 'log_metrics' returned an awaitable"):
        plugins.each("log_metrics", step=0, metrics={}, run=None)


def test_a_project_file_named_in_the_config_can_be_disabled_by_name(tinkerplug_runner):
    config = OVERRIDE_EXAMPLE / "config.toml"
    rows = plugins_json(tinkerplug_runner, "--hook", "lr_for_step", "-c", str(config), "-p", "no:project:my_hooks")
    assert [r["name"] for r in rows] == ["schedule"]
