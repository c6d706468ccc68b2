"""API keys are never written anywhere, and plugin code runs only when the user names it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import DATA, ROOT, run_cli, run_inprocess

BASE_MODEL = os.environ.get("TINKERPLUG_TEST_MODEL", "tiny-chat")
FAKE_KEY = "tml-FAKE0SECRET0do0not0write0me0anywhere"

# Files a careless loader might pick up from the current directory. Each one, if imported,
# leaves a marker file behind.
PLANTED = ["conftest.py", "tinkerplug_hooks.py", "tinkerplug_plugins.py", "my_hooks.py", "plugins.py",
           "tinkerplug_metrics_jsonl.py"]  # the last one has the name of a first-party plugin module


@pytest.mark.slow  # a process: `python -m` puts the current directory on sys.path
def test_api_key_is_never_written_and_cwd_files_are_never_loaded(tmp_path):
    for name in PLANTED:
        (tmp_path / name).write_text(
            f"from pathlib import Path\nPath({str(tmp_path / ('LOADED-' + name))!r}).write_text('x')\n"
        )
    config = tmp_path / "config.toml"
    config.write_text(
        f'base_model = {json.dumps(BASE_MODEL)}\nbackend = "local"\n'
        "batch_size = 4\nnum_steps = 4\nsave_every = 2\nmax_length = 64\nlearning_rate = 1e-3\n"
        f"run_dir = {json.dumps(str(tmp_path / 'run'))}\n"
        f"[data]\ntrain = {json.dumps(str(DATA / 'fast_train.jsonl'))}\n"
        f"heldout = {json.dumps(str(DATA / 'fast_heldout.jsonl'))}\n"
        "[heldout]\nlimit = 2\nmax_tokens = 4\n"
        f"[inspect]\ntasks = [{json.dumps(str(ROOT / 'examples/quickstart/inspect_task.py') + '@subtraction')}]\n"
        "limit = 2\nmax_tokens = 4\n"
    )
    # The real command, from the directory holding the planted files, with a key set.
    result = run_cli("run", str(config), cwd=tmp_path, env={"TINKER_API_KEY": FAKE_KEY})
    assert result.returncode == 0, result.stderr

    assert not list(tmp_path.glob("LOADED-*")), "a file in the current directory was imported"
    run_dir = tmp_path / "run"
    files = [p for p in run_dir.rglob("*") if p.is_file()]
    kinds = {p.suffix for p in files}
    assert {".json", ".jsonl", ".safetensors", ".pt", ".eval"} <= kinds, kinds  # config, metrics, checkpoints, Inspect logs
    for path in files:
        data = path.read_bytes()
        if path.suffix == ".eval":  # a compressed zip: look at what Inspect reads back
            from inspect_ai.log import read_eval_log

            data += read_eval_log(str(path)).model_dump_json().encode()
        assert FAKE_KEY.encode() not in data, f"the API key was written to {path}"
        assert b"FAKE0SECRET" not in data, f"part of the API key was written to {path}"
    assert FAKE_KEY not in result.stdout + result.stderr


def test_a_key_in_the_config_is_refused_before_anything_is_written(tmp_path):
    config = tmp_path / "config.toml"
    config.write_text(
        f'base_model = "tiny-chat"\nrun_dir = {json.dumps(str(tmp_path / "run"))}\n'
        f"[data]\ntrain = {json.dumps(str(DATA / 'fast_train.jsonl'))}\n"
    )
    result = run_inprocess("run", str(config), "--set", f"tinker.api_key={FAKE_KEY}", cwd=tmp_path)
    assert result.returncode == 2 and "looks like a secret" in result.stderr
    assert "TINKER_API_KEY" in result.stderr and "Traceback" not in result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.toml"]


def test_plugin_files_load_only_when_named(tmp_path):
    """The same file is loaded once it is named with -p: the test above is not vacuous."""
    marker = tmp_path / "LOADED"
    (tmp_path / "tinkerplug_hooks.py").write_text(f"from pathlib import Path\nPath({str(marker)!r}).write_text('x')\n")
    result = run_cli("plugins", cwd=tmp_path)
    assert result.returncode == 0 and not marker.exists()
    result = run_cli("plugins", "-p", "tinkerplug_hooks.py", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert marker.exists() and "project:tinkerplug_hooks" in result.stdout
