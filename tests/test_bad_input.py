"""Every bad input gets one clear message (which file, line, plugin; what to do), a non-zero
exit, no traceback, and loses nothing: the run dir is not even created.

Each case goes through the real CLI entry point, ``tinkerplug.cli.main``, in this process (the
interpreter start-up costs more than every case together); a few run as real processes too.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import pytest

from conftest import DATA, run_cli
from tinkerplug.cli import main

BASE_MODEL = os.environ.get("TINKERPLUG_TEST_MODEL", "tiny-chat")
GOOD_RECORD = {"messages": [{"role": "user", "content": "Reverse: ab"}, {"role": "assistant", "content": "BA"}]}


@dataclass
class Case:
    """A config (``keys`` replace the defaults, None removes one), data lines, extra CLI args
    and env; what the error must say, and its exit code."""

    expected: list[str]
    code: int = 2
    keys: dict[str, object] = field(default_factory=dict)
    data: list[str] | None = None
    args: list[str] = field(default_factory=list)
    env: dict[str, str | None] = field(default_factory=dict)
    config_text: str | None = None  # the whole config file, instead of keys
    text: str = ""  # appended to the config written from keys
    setup: Callable[[Path], None] | None = None


def _record(role: str = "assistant", text: str = "BA") -> str:
    return json.dumps({"messages": [{"role": "user", "content": "Reverse: ab"}, {"role": role, "content": text}]})


def _model_without_weights(tmp: Path) -> None:
    (tmp / "empty-model").mkdir()
    (tmp / "empty-model" / "config.json").write_text("{}")


def _broken_plugin_dist(tmp: Path) -> None:
    """An installed distribution whose ``tinkerplug`` entry point fails to import."""
    site = tmp / "site"
    info = site / "tinkerplug_broken-0.3.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tinkerplug-broken\nVersion: 0.3\n")
    (info / "entry_points.txt").write_text("[tinkerplug]\nbroken = tinkerplug_broken_impl\n")
    (site / "tinkerplug_broken_impl.py").write_text("import a_module_that_is_not_installed\n")


def _raising_plugin(tmp: Path) -> None:
    (tmp / "my_hooks.py").write_text(
        "import tinkerplug\n\n"
        "@tinkerplug.hookimpl\n"
        "def log_metrics(step, metrics, run):\n"
        "    raise ValueError('cannot reach the dashboard')\n"
    )


def _saved_run(steps: list[int]) -> Callable[[Path], None]:
    """A run dir with ``config.json`` and checkpoint rows at ``steps`` (nothing is loaded
    from them: the checkpoint is picked first)."""

    def setup(tmp: Path) -> None:
        run = tmp / "saved"
        run.mkdir()
        (run / "config.json").write_text(json.dumps({"base_model": "tiny-chat", "data": {"train": str(DATA / "fast_train.jsonl")}}))
        (run / "metrics.jsonl").write_text("")
        rows = [{"step": s, "epoch": 0, "batch": s, "state_path": f"{run}/w/{s}", "sampler_path": f"{run}/s/{s}", "time": 0.0} for s in steps]
        (run / "checkpoints.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))

    return setup


CASES: dict[str, Case] = {
    "config file missing": Case(["config file", "nope.toml not found"], args=["run", "{tmp}/nope.toml"]),
    "config not TOML": Case(["config.toml: not valid TOML", "(at line 2, column 13)"], config_text='base_model = "tiny-chat"\nlora_rank = = 4\n'),
    "unknown key": Case(["config.toml:8: unknown key 'lora_rnk'", "known keys"], keys={"lora_rnk": 4}),
    "wrong type": Case(["config.toml:3: learning_rate: Input should be a valid number", "'fast'"], keys={"learning_rate": "fast"}),
    "lora_rank 0": Case(["lora_rank: Input should be greater than 0"], keys={"lora_rank": 0}),
    "learning_rate 0": Case(["learning_rate: Input should be greater than 0"], keys={"learning_rate": 0.0}),
    "batch_size 0": Case(["batch_size: Input should be greater than 0"], keys={"batch_size": 0}),
    "min_lr above learning_rate": Case(["[schedule] min_lr (0.01) is above learning_rate (0.001)"], keys={"learning_rate": 1e-3}, args=["--set", "schedule.min_lr=0.01"]),
    "unknown key in a table": Case(["data.trian: unknown key; did you mean 'train'?", "(valid keys: format, heldout, train)"], keys={"data.trian": "x.jsonl"}),
    "bad --set value": Case(["--set lora_rank=abc: lora_rank: Input should be a valid integer"], args=["--set", "lora_rank=abc"]),
    "bad --set": Case(["--set 'lora_rank'", "expected KEY=VALUE"], args=["--set", "lora_rank"]),
    "data file missing": Case(["training data file", "nope.jsonl not found", "relative to the config file"], keys={"data.train": "nope.jsonl"}),
    "malformed JSONL line": Case(["train.jsonl:3: not valid JSON"], data=[_record(), _record(), '{"messages": [', _record()]),
    "record without messages": Case(['train.jsonl:2: record has no "messages" list', "one JSON object per line"], data=[_record(), '{"text": "hi"}']),
    "unknown role": Case(["train.jsonl:1: message 1 has unknown role 'bot'", "roles are system, user, assistant, tool"], data=[_record(role="bot")]),
    "data not UTF-8": Case(["train.jsonl:2: not UTF-8 text", "one JSON object per line"], setup=lambda t: (t / "train.jsonl").write_bytes(_record().encode() + b"\n\xff\xfe{}\n")),
    "empty dataset": Case(["train.jsonl has no records", "add one"], data=["", "  "]),
    "every example too long": Case(["every example in", "longer than max_length=8", "overlong = \"truncate\""], keys={"max_length": 8}),
    "unknown renderer": Case(["unknown renderer 'nope'", "qwen3"], code=3, keys={"renderer": "nope"}),
    "renderer does not fit the model": Case(["renderer 'llama3' does not fit base_model", "special tokens are not tokens of this model", "leave `renderer` unset"], code=3, keys={"renderer": "llama3"}),
    "unknown base_model": Case(["unknown base_model 'no-such-model'", "tiny-chat"], code=3, keys={"base_model": "no-such-model"}),
    "model dir without weights": Case(["has no weights", "config.json, weights and tokenizer"], code=3, keys={"base_model": "{tmp}/empty-model"}, setup=_model_without_weights),
    "tinker backend without key": Case(["TINKER_API_KEY"], code=3, keys={"backend": "tinker"}, env={"TINKER_API_KEY": None}),
    "plugin fails to import": Case(
        ["plugin 'broken'", "distribution tinkerplug-broken", "ModuleNotFoundError", "-p no:broken"],
        code=3, setup=_broken_plugin_dist,
    ),
    "plugin hook raises": Case(
        ["plugin 'project:my_hooks' raised in hook 'log_metrics': ValueError: cannot reach the dashboard",
         "-p no:project:my_hooks", "resumes with: tinkerplug run"],
        code=3, args=["-p", "{tmp}/my_hooks.py"], setup=_raising_plugin,
    ),
    "unreadable Parquet file": Case(
        ["bad.parquet: not a readable Parquet file", "cut-off download"],
        keys={"data.train": "bad.parquet"}, setup=lambda t: (t / "bad.parquet").write_bytes(b"PAR1 not really parquet"),
    ),
    "column the format needs is missing": Case(
        ["train.csv: format 'alpaca' needs column 'output'; its columns: instruction, input", "data.format picks one"],
        keys={"data.train": "train.csv", "data.format": "alpaca"}, setup=lambda t: (t / "train.csv").write_text("instruction,input\nx,y\n"),
    ),
    "record fits no format": Case(
        ["train.jsonl:1: record fits no data format (its keys: answer, question)", "alpaca"],
        data=['{"question": "q", "answer": "a"}'],
    ),
    "unknown data format": Case(["unknown data format 'chatml'", "data.format is one of", "messages, sharegpt"], keys={"data.format": "chatml"}),
    "mixture weight 0": Case(
        ["config.toml:13: data.train.1.weight: Input should be greater than 0 (got 0)"],
        keys={"data.train": None}, text='[[data.train]]\npath = "train.jsonl"\n[[data.train]]\npath = "train.jsonl"\nweight = 0\n',
    ),
    "hf: hub name while offline": Case(
        ["hf:nobody/nothing", "HF_HUB_OFFLINE is set and dataset 'nobody/nothing' is neither a local directory nor in the cache"],
        keys={"data.train": "hf:nobody/nothing"}, env={"HF_HUB_OFFLINE": "1", "HF_HOME": "/nonexistent/hf-home"},
    ),
    "wandb not installed": Case(
        ["the config has a [wandb] table, but the wandb package is not installed", "pip install 'tinkerplug[wandb]'"],
        code=3, text='[wandb]\nproject = "p"\n',
    ),
    "eval: run dir without a checkpoint": Case(
        ["saved has no checkpoint yet: nothing to load", "at the end of a run"], args=["eval", "{tmp}/saved"], setup=_saved_run([]),
    ),
    "chat: run dir without a checkpoint": Case(
        ["saved has no checkpoint yet: nothing to load"], args=["chat", "{tmp}/saved"], setup=_saved_run([]),
    ),
    "eval --step that does not exist": Case(
        ["saved has no checkpoint at step 7", "checkpoint steps: 5, 10 (--step N)"],
        args=["eval", "{tmp}/saved", "--step", "7"], setup=_saved_run([5, 10]),
    ),
    "chat: not a run dir": Case(["nothing is not a run directory: it does not exist"], args=["chat", "{tmp}/nothing"]),
    "run_dir is a file": Case(["exists and is not a directory"], keys={"run_dir": "{tmp}/afile"}, setup=lambda t: (t / "afile").write_text("x")),
}


def write_case(tmp: Path, case: Case) -> list[str]:
    """Write the case's config and data into ``tmp``; return the CLI arguments."""
    if case.setup:
        case.setup(tmp)
    data = tmp / "train.jsonl"
    if not data.exists():  # a setup may have written it
        data.write_text("\n".join(case.data if case.data is not None else (DATA / "fast_train.jsonl").read_text().splitlines()[:16]) + "\n")
    keys: dict[str, object] = {
        "base_model": BASE_MODEL, "lora_rank": 4, "learning_rate": 1e-3, "batch_size": 4, "num_steps": 2,
        "max_length": 64, "run_dir": str(tmp / "run"), "data.train": "train.jsonl",
    }
    keys.update(case.keys)
    keys = {k: v for k, v in keys.items() if v is not None}
    lines = [f"{k} = {json.dumps(str(v).format(tmp=tmp) if isinstance(v, str) else v)}" for k, v in keys.items() if "." not in k]
    lines += ["[data]"] + [f"{k.split('.')[1]} = {json.dumps(v)}" for k, v in keys.items() if k.startswith("data.")]
    lines += [case.text]
    config = tmp / "config.toml"
    config.write_text(case.config_text if case.config_text is not None else "\n".join(lines) + "\n")
    args = [a.format(tmp=tmp) for a in case.args]
    if not args or args[0] not in ("run", "eval", "chat"):
        args = ["run", str(config), *args]
    return args


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_gets_one_clear_message(name, tmp_path, monkeypatch, capsys):
    case = CASES[name]
    args = write_case(tmp_path, case)
    for key, value in case.env.items():
        monkeypatch.delenv(key, raising=False) if value is None else monkeypatch.setenv(key, value)
    if name == "plugin fails to import":
        monkeypatch.syspath_prepend(str(tmp_path / "site"))
    if name == "wandb not installed":
        monkeypatch.setattr("tinkerplug_wandb.settings.wandb_installed", lambda: False)
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == case.code, err
    assert "Traceback" not in err
    assert err.count("error: ") == 1, err
    for text in case.expected:
        assert text in err, f"{text!r} not in:\n{err}"
    if name != "plugin hook raises":  # that one fails mid-run: its run dir stays to resume
        assert sorted(p.name for p in tmp_path.iterdir()) == before, "a failed start left files behind"
    else:
        assert (tmp_path / "run" / "config.json").is_file()


def test_some_examples_too_long_are_counted(tmp_path, capsys):
    """Dropped (the default) or truncated, the count is reported and the run goes on."""
    short = [_record() for _ in range(8)]
    long = [_record(text="X" * 200) for _ in range(3)]
    for overlong, expected in (("drop", "3 dropped as longer than max_length=48"), ("truncate", "3 truncated to max_length=48")):
        directory = tmp_path / overlong
        directory.mkdir()
        args = write_case(directory, Case([], data=short + long, keys={"max_length": 48, "overlong": overlong}))
        main(args)
        err = capsys.readouterr().err
        assert expected in err and "warning:" in err, err
        kept = 8 if overlong == "drop" else 11
        assert f"data: {kept}/11 examples" in err


def test_unexpected_errors_print_one_line_and_how_to_see_the_traceback(tmp_path, monkeypatch, capsys):
    import tinkerplug.prepare

    def broken(*args, **kwargs):
        raise RuntimeError("something nobody expected\nsecond line")

    monkeypatch.setattr(tinkerplug.prepare, "open_data", broken)
    args = write_case(tmp_path, Case([]))
    with pytest.raises(SystemExit) as exit_info:
        main(args)
    err = capsys.readouterr().err
    assert exit_info.value.code == 1
    assert err.splitlines() == [
        "error: unexpected RuntimeError: something nobody expected",
        "  rerun with TINKERPLUG_DEBUG=1 for the traceback (and please report it)",
    ]
    monkeypatch.setenv("TINKERPLUG_DEBUG", "1")
    with pytest.raises(RuntimeError, match="something nobody expected"):
        main(args)  # uncaught: Python prints the traceback


@pytest.mark.slow  # real processes, on purpose
def test_errors_in_a_real_process(tmp_path):
    """The same, end to end in a real process: exit codes, stderr, no traceback."""
    _broken_plugin_dist(tmp_path)
    args = write_case(tmp_path, Case([]))
    result = run_cli(*args, env={"PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), *sys.path])})
    assert result.returncode == 3 and "Traceback" not in result.stderr
    assert "distribution tinkerplug-broken" in result.stderr

    (tmp_path / "boom.py").write_text(
        "import tinkerplug.prepare\n\n"
        "def _boom(*a, **k):\n    raise RuntimeError('boom')\n\n"
        "tinkerplug.prepare.open_data = _boom\n"
    )
    result = run_cli(*args, "-p", str(tmp_path / "boom.py"))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "error: unexpected RuntimeError: boom" in result.stderr and "TINKERPLUG_DEBUG=1" in result.stderr
    result = run_cli(*args, "-p", str(tmp_path / "boom.py"), env={"TINKERPLUG_DEBUG": "1"})
    assert result.returncode == 1 and "Traceback (most recent call last)" in result.stderr
