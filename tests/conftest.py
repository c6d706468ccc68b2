"""Shared fixtures. Everything runs offline on the shipped tiny-chat model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.pop("TINKER_API_KEY", None)
# Rendered examples are cached per data file and settings: never in the user's ~/.cache.
if "TINKERPLUG_CACHE_DIR" not in os.environ:
    import atexit
    import shutil
    import tempfile

    os.environ["TINKERPLUG_CACHE_DIR"] = tempfile.mkdtemp(prefix="tinkerplug-test-cache-")
    atexit.register(shutil.rmtree, os.environ["TINKERPLUG_CACHE_DIR"], True)

# The harness plugin authors use (also a pytest11 entry point once installed; the same name, so
# it registers once either way).
pytest_plugins = ["tinkerplug.testing"]

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"


def write_config(directory: Path, text: str = "", **overrides: object) -> Path:
    """A short real run on the fast task; ``overrides`` replace top-level keys."""
    values: dict[str, object] = {
        "base_model": "tiny-chat",
        "learning_rate": 3e-3,
        "batch_size": 8,
        "num_steps": 12,
        "max_length": 64,
        "seed": 0,
        "eval_every": 0,
        "save_every": 0,
        "run_dir": str(directory / "run"),
    }
    values.update(overrides)
    lines = [f"{k} = {json.dumps(v)}" for k, v in values.items() if v is not None]
    lines += [
        "[data]",
        f"train = {json.dumps(str(DATA / 'fast_train.jsonl'))}",
        f"heldout = {json.dumps(str(DATA / 'fast_heldout.jsonl'))}",
        "[heldout]",
        "limit = 16",
        "max_tokens = 16",
    ]
    path = directory / "config.toml"
    path.write_text("\n".join(lines) + "\n" + text)
    return path


def run_cli(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 600, input: str | None = None
) -> subprocess.CompletedProcess:
    """Run the real ``tinkerplug`` command in a new process."""
    full_env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "tinkerplug.cli", *args],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout, input=input,
    )


PROCESSES_ENV = "TINKERPLUG_TEST_PROCESSES"


def run_inprocess(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float | None = None, input: str = ""
):
    """``run_cli`` in this process (``tinkerplug.testing``), with the same ``returncode``,
    ``stdout`` and ``stderr``: for tests where a process is not what is tested, so they skip an
    interpreter start-up and the re-import of torch. ``PYTHONPATH`` entries in ``env`` that are
    not on ``sys.path`` become importable for the call; ``input`` is its stdin; ``timeout`` is
    not enforced. With ``TINKERPLUG_TEST_PROCESSES=1`` it is ``run_cli``: every such test on a
    real process again, to time the difference or to check that both behave the same."""
    from tinkerplug.testing import TinkerplugRunner

    if os.environ.get(PROCESSES_ENV) == "1":  # the same tests on real processes (before/after timings, a cross-check)
        return run_cli(*args, cwd=cwd, env=env, timeout=timeout or 600, input=input)
    extra = dict(env or {})
    runner = TinkerplugRunner(Path(cwd) if cwd is not None else Path.cwd())
    for entry in reversed((extra.pop("PYTHONPATH", "") or "").split(os.pathsep)):
        if entry and entry not in sys.path:
            runner.syspath_prepend(entry)
    return runner.invoke(*args, env=extra, input=input)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory):
    from tinkerplug_local import ServiceClient

    client = ServiceClient(checkpoint_dir=tmp_path_factory.mktemp("local"))
    yield client
    client.close()


@pytest.fixture(scope="session")
def short_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One finished 6-step run (evals at steps 0, 3 and 6, checkpoints at 3 and 6), trained once
    per session for the tests that only read a run dir. Read-only: copy it to change it."""
    directory = tmp_path_factory.mktemp("short-run")
    config = write_config(directory, num_steps=6, eval_every=3, save_every=3)
    result = run_inprocess("run", str(config), "-q")
    assert result.returncode == 0, result.stderr
    return directory / "run"

