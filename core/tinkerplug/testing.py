"""Test plugins the way users run them: ``tinkerplug`` commands in this process, in a temporary
directory, on the shipped ``tiny-chat`` model (pytest's ``pytester`` and click's ``CliRunner``
are the models).

As a pytest plugin it provides the ``tinkerplug_runner`` fixture. It is registered for every
pytest run once tinkerplug is installed (a ``pytest11`` entry point); a ``conftest.py`` line
``pytest_plugins = ["tinkerplug.testing"]`` does the same without relying on that::

    def test_my_plugin_logs_its_metric(tinkerplug_runner):
        plugin = tinkerplug_runner.write_plugin("my_plugin", MY_PLUGIN_SOURCE)
        config = tinkerplug_runner.write_config(num_steps=4)
        result = tinkerplug_runner.run(config, "-p", str(plugin))
        assert result.exit_code == 0, result.output
        assert all("my/metric" in row for row in result.train_rows)

Each call is isolated: a fresh plugin manager (``tinkerplug`` builds one per command), the
environment, working directory, ``sys.path``, logging handlers and SIGINT handler as they
were, and project plugin files unloaded again, so one run's plugins cannot leak into the next.

Light at import (pytest imports it at start-up): the CLI and its plugins load on first use.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import random
import signal
import string
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

# The module name a project plugin file is imported as (``plugin_loader``): dropped after every call.
PROJECT_MODULE_PREFIX = "tinkerplug_project_"
DEFAULT_KEYS: dict[str, Any] = {
    "base_model": "tiny-chat",
    "learning_rate": 3e-3,
    "batch_size": 4,
    "num_steps": 4,
    "max_length": 64,
    "seed": 0,
    "eval_every": 0,
    "save_every": 0,
    "run_dir": "run",
}


@dataclass
class Result:
    """What one command did: its exit code, what it printed, and the run dir it wrote."""

    args: list[str]
    exit_code: int
    stdout: str
    stderr: str
    output: str  # stdout and stderr interleaved, as a terminal shows them
    run_dir: Path | None = None
    exception: BaseException | None = None  # an exception that escaped the command (TINKERPLUG_DEBUG=1)

    @property
    def returncode(self) -> int:
        """``exit_code`` under ``subprocess.CompletedProcess``'s name."""
        return self.exit_code

    @property
    def metrics(self) -> list[dict[str, Any]]:
        """Every row of ``RUN_DIR/metrics.jsonl``."""
        return self._rows("metrics.jsonl")

    @property
    def train_rows(self) -> list[dict[str, Any]]:
        """The metrics rows of training steps (those with ``train/loss``)."""
        return [row for row in self.metrics if "train/loss" in row]

    @property
    def checkpoints(self) -> list[dict[str, Any]]:
        """Every row of ``RUN_DIR/checkpoints.jsonl``."""
        return self._rows("checkpoints.jsonl")

    def json(self) -> Any:
        """stdout parsed as JSON (``--json`` commands)."""
        return json.loads(self.stdout)

    def _rows(self, name: str) -> list[dict[str, Any]]:
        if self.run_dir is None or not (self.run_dir / name).is_file():
            return []
        return [json.loads(line) for line in (self.run_dir / name).read_text().splitlines() if line.strip()]


class TinkerplugRunner:
    """Writes configs, data and plugin files into ``path`` and runs ``tinkerplug`` commands
    there, in this process (``invoke``, ``run``) or, where a process is the point, in a child
    (``run_process``)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.sys_path: list[str] = []  # put on sys.path (and PYTHONPATH) for every call
        self._loaded: tuple[list[str], set[str]] | None = None  # sys.path and modules before ``load``

    # -- files ---------------------------------------------------------------------------------

    def write_data(self, records: Iterable[Mapping[str, Any]] | None = None, name: str = "train.jsonl", n: int = 64) -> Path:
        """A JSONL data file; by default ``n`` chat records of a task tiny-chat learns in a few
        steps (the first letter of a word)."""
        rows = list(records) if records is not None else first_letter_records(n)
        path = self.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
        return path

    def write_config(
        self, text: str = "", name: str = "config.toml", train: str | Path | None = None,
        heldout: str | Path | None = None, **keys: Any,
    ) -> Path:
        """A short real run on tiny-chat (4 steps of 4 examples, run dir ``./run``); ``keys``
        replace top-level keys (None removes one), ``text`` is appended (tables). Without
        ``train``, ``train.jsonl`` (written by ``write_data`` if missing) is the training data;
        ``heldout`` adds held-out data (the first-party ``heldout`` evaluator then runs)."""
        if train is None:
            train = self.path / "train.jsonl" if (self.path / "train.jsonl").is_file() else self.write_data()
        values = {**DEFAULT_KEYS, **keys}
        lines = [f"{k} = {_toml(v)}" for k, v in values.items() if v is not None]
        lines += ["", "[data]", f"train = {_toml(str(train))}"]
        if heldout is not None:
            lines.append(f"heldout = {_toml(str(heldout))}")
        path = self.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(lines) + "\n" + text)
        return path

    def write_plugin(self, name: str, source: str) -> Path:
        """A project plugin file ``NAME.py`` (load it with ``-p`` or ``plugins = [...]``)."""
        path = self.path / f"{name}.py"
        path.write_text(source)
        return path

    def syspath_prepend(self, directory: str | Path) -> None:
        """Make ``directory`` importable in every later call, e.g. a ``pip install --target``
        dir holding a plugin distribution (its entry points are found there)."""
        self.sys_path.insert(0, str(directory))

    # -- commands ------------------------------------------------------------------------------

    def run(self, config: str | Path, *args: str, **kwargs: Any) -> Result:
        """``tinkerplug run CONFIG ARGS...`` in this process."""
        return self.invoke("run", str(config), *args, **kwargs)

    def invoke(
        self, *args: str, env: Mapping[str, str | None] | None = None, cwd: str | Path | None = None, input: str = "",
    ) -> Result:
        """``tinkerplug ARGS...`` in this process, in ``cwd`` (default: the runner's directory)
        with ``env`` added (None removes a variable) and ``input`` as its stdin; everything is
        restored afterwards."""
        workdir = Path(cwd) if cwd is not None else self.path
        out, err, both = io.StringIO(), io.StringIO(), io.StringIO()
        with _isolated(workdir, env or {}, self.sys_path), _commands_restored() as cli:
            with contextlib.redirect_stdout(_Tee(out, both)), contextlib.redirect_stderr(_Tee(err, both)), _stdin(input):
                if self.sys_path:  # installed plugins there add commands at start-up, as in a new process
                    cli._add_plugin_commands()
                exit_code, escaped = _call_main(cli.main, list(args), err)
            run_dir = _run_dir(list(args), workdir)
        return Result(list(args), exit_code, out.getvalue(), err.getvalue(), both.getvalue(), run_dir, escaped)

    def run_process(self, *args: str, env: Mapping[str, str] | None = None, cwd: str | Path | None = None, timeout: float = 600) -> Result:
        """``python -m tinkerplug.cli ARGS...`` in a child process: for what only a process
        shows (signals, kill -9, start-up imports, the interpreter's own exit)."""
        workdir = Path(cwd) if cwd is not None else self.path
        full_env = {**os.environ, **(env or {})}
        if self.sys_path:
            full_env["PYTHONPATH"] = os.pathsep.join([*self.sys_path, *filter(None, [full_env.get("PYTHONPATH")])])
        done = subprocess.run(
            [sys.executable, "-m", "tinkerplug.cli", *args],
            cwd=workdir, env=full_env, capture_output=True, text=True, timeout=timeout,
        )
        return Result(list(args), done.returncode, done.stdout, done.stderr, done.stdout + done.stderr, _run_dir(list(args), workdir))

    def load(self, config: str | Path, *overrides: str, plugin_options: Iterable[str] = ()) -> tuple[Any, Any]:
        """The ``(RunConfig, Plugins)`` a run of CONFIG would use, without running it: call a
        hook as the loop does, e.g. ``plugins.lr_for_step(step, num_steps, config)``. The
        plugins stay importable until ``cleanup`` (the fixture's teardown)."""
        from tinkerplug.assemble import load_run_config

        if self._loaded is None:
            self._loaded = (list(sys.path), set(sys.modules))
            sys.path[:0] = self.sys_path
        with _isolated(self.path, {}, [], keep_modules=True):
            return load_run_config(str(config), tuple(overrides), tuple(plugin_options))

    def cleanup(self) -> None:
        """Undo what ``load`` left in place: ``sys.path`` and the plugin modules it imported."""
        if self._loaded is not None:
            saved_path, before = self._loaded
            sys.path[:] = saved_path
            _unload(set(sys.modules) - before, self.sys_path)
            self._loaded = None


def first_letter_records(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` chat records: "First letter: WORD" answered with the word's first letter."""
    rng = random.Random(seed)
    records = []
    for _ in range(n):
        word = "".join(rng.choices(string.ascii_lowercase, k=rng.randint(3, 7)))
        records.append({"messages": [{"role": "user", "content": f"First letter: {word}"}, {"role": "assistant", "content": word[0]}]})
    return records


@contextlib.contextmanager
def _isolated(cwd: Path, env: Mapping[str, str | None], sys_path: list[str], keep_modules: bool = False) -> Iterator[None]:
    """Run with ``env``, in ``cwd``, with ``sys_path`` importable; put back the process state a
    command may change (environment, cwd, sys.path, logging handlers, SIGINT handler) and
    unload the plugin files and modules it imported from ``sys_path``."""
    saved_env, saved_cwd, saved_path = dict(os.environ), os.getcwd(), list(sys.path)
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    saved_sigint = signal.getsignal(signal.SIGINT)
    before = set(sys.modules)
    try:
        for key, value in env.items():
            os.environ.pop(key, None) if value is None else os.environ.__setitem__(key, value)
        sys.path[:0] = sys_path
        os.chdir(cwd)
        yield
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
        sys.path[:] = saved_path
        root.handlers[:] = saved_handlers
        root.setLevel(saved_level)
        if signal.getsignal(signal.SIGINT) is not saved_sigint:
            signal.signal(signal.SIGINT, saved_sigint)
        if not keep_modules:
            _unload(set(sys.modules) - before, sys_path)


def _call_main(main: Any, args: list[str], err: io.StringIO) -> tuple[int, BaseException | None]:
    """The exit code of ``main(args)`` and an exception that escaped it (TINKERPLUG_DEBUG=1)."""
    try:
        main(args)
    except SystemExit as exc:
        return _exit_code(exc.code, err), None
    except Exception as exc:  # noqa: BLE001 - reported in the result, as a process would exit 1
        return 1, exc
    return 0, None


@contextlib.contextmanager
def _commands_restored() -> Iterator[Any]:
    """The CLI module, with its command group as it was afterwards (plugins add commands)."""
    from tinkerplug import cli

    commands = dict(cli.cli.commands)
    try:
        yield cli
    finally:
        cli.cli.commands.clear()
        cli.cli.commands.update(commands)


@contextlib.contextmanager
def _stdin(text: str) -> Iterator[None]:
    saved = sys.stdin
    sys.stdin = io.StringIO(text)
    try:
        yield
    finally:
        sys.stdin = saved


def _unload(new: set[str], sys_path: list[str]) -> None:
    """Forget project plugin files and modules imported from the runner's extra paths, so a
    later call imports them afresh (or not at all)."""
    roots = tuple(str(Path(p).resolve()) + os.sep for p in sys_path)
    for name in new:
        module = sys.modules.get(name)
        origin = getattr(module, "__file__", None) or ""
        if name.startswith(PROJECT_MODULE_PREFIX) or (roots and str(Path(origin).resolve()).startswith(roots)):
            sys.modules.pop(name, None)
    if roots:
        import importlib

        importlib.invalidate_caches()


def _run_dir(args: list[str], cwd: Path) -> Path | None:
    """The run dir of ``run CONFIG [--set run_dir=...]``: the last ``--set`` wins over the file;
    relative to the working directory, as tinkerplug resolves it."""
    if len(args) < 2 or args[0] != "run":
        return None
    value: Any = None
    config = Path(args[1]) if Path(args[1]).is_absolute() else cwd / args[1]
    with contextlib.suppress(OSError, tomllib.TOMLDecodeError):
        value = tomllib.loads(config.read_text(encoding="utf-8")).get("run_dir")
    for flag, setting in zip(args, args[1:]):
        if flag == "--set" and setting.replace(" ", "").startswith("run_dir="):
            value = setting.split("=", 1)[1].strip().strip("\"'")
    path = Path(value) if isinstance(value, str) else Path("runs/default")
    return path if path.is_absolute() else cwd / path


def _exit_code(code: Any, err: io.StringIO) -> int:
    """``sys.exit``'s argument as a process would report it (a message is printed, exit 1)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    err.write(f"{code}\n")
    return 1


def _toml(value: Any) -> str:
    """A TOML value for a top-level key (strings, numbers, booleans and lists of them)."""
    if isinstance(value, Path):
        value = str(value)
    return json.dumps(value)


class _Tee(io.TextIOBase):
    """Writes to its own buffer and to the shared one (stdout and stderr interleaved)."""

    def __init__(self, own: io.StringIO, shared: io.StringIO) -> None:
        self.own, self.shared = own, shared

    @property
    def encoding(self) -> str:
        return "utf-8"

    def write(self, text: str) -> int:
        self.own.write(text)
        self.shared.write(text)
        return len(text)

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True


try:  # the fixture for pytest; the runner itself works under any test framework
    import pytest
except ImportError:  # pragma: no cover - pytest is how most plugin authors test
    pytest = None

if pytest is not None:

    @pytest.fixture
    def tinkerplug_runner(tmp_path: Path) -> Iterator[TinkerplugRunner]:
        """A ``TinkerplugRunner`` in a fresh temporary directory."""
        runner = TinkerplugRunner(tmp_path)
        yield runner
        runner.cleanup()
