"""Hooks that only ran inside whole runs, each named by a test of its contract (in-process,
through ``tinkerplug.testing``): a plugin's config table, a data source of its own, messages,
and fetching a checkpoint's weights."""

from __future__ import annotations

import json

from tinkerplug.hook_types import CheckpointRecord
from tinkerplug.testing import first_letter_records

GREETING_TABLE = '''
import tinkerplug
from pydantic import BaseModel, ConfigDict, Field


class Greeting(BaseModel):
    model_config = ConfigDict(extra="forbid")
    times: int = Field(1, gt=0)


@tinkerplug.hookimpl
def register_config_sections(register):
    register("greeting", Greeting, result_keys=("times",))
'''

MEMORY_SOURCE = '''
import tinkerplug
from tinkerplug.testing import first_letter_records


class Letters:
    def __init__(self, n):
        self.rows = first_letter_records(n, seed=1)

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        return self.rows[index]

    def where(self, index):
        return f"mem:letters row {index}"

    def fingerprint(self):
        return "letters-%d" % len(self.rows)


@tinkerplug.hookimpl
def load_records(source, config):
    if source.path.startswith("mem:letters"):
        return Letters(int(source.path.rpartition(":")[2]))
    return None
'''

MESSAGE_LOG = '''
import json, os
import tinkerplug


@tinkerplug.hookimpl
def on_message(text, level, config):
    with open(os.environ["MESSAGE_LOG"], "a") as log:
        log.write(json.dumps({"level": level, "text": text, "steps": config.num_steps}) + "\\n")
'''

FETCH_LOCAL = '''
import pathlib
import tinkerplug


@tinkerplug.hookimpl
def fetch_sampler_weights(record, config, dest):
    if not record.sampler_path.startswith("mine://"):
        return None
    (pathlib.Path(dest) / "adapter_config.json").write_text("{}")
    return True
'''


def test_register_config_sections_validates_a_plugins_table(tinkerplug_runner):
    plugin = tinkerplug_runner.write_plugin("greeting", GREETING_TABLE)
    config_path = tinkerplug_runner.write_config("[greeting]\ntimes = 3\n", plugins=[str(plugin)])
    config, plugins = tinkerplug_runner.load(config_path)
    assert config.section("greeting").times == 3
    assert "greeting.times" in config.result_keys()  # a changed value refuses --resume
    bad = tinkerplug_runner.run(config_path, "--set", "greeting.times=0")
    assert bad.exit_code == 2 and "greeting.times" in bad.stderr and "Traceback" not in bad.output
    assert not (tinkerplug_runner.path / "run").exists()
    unknown = tinkerplug_runner.run(config_path, "--set", "greeting.tims=2")
    assert unknown.exit_code == 2 and "tims" in unknown.stderr


def test_load_records_reads_a_source_of_its_own(tinkerplug_runner):
    plugin = tinkerplug_runner.write_plugin("letters", MEMORY_SOURCE)
    config_path = tinkerplug_runner.write_config(train="mem:letters:24", plugins=[str(plugin)], num_steps=3)
    config, plugins = tinkerplug_runner.load(config_path)
    from tinkerplug.data import DataSource

    records = plugins.load_records(DataSource(path="mem:letters:24", role="train"), config)
    assert len(records) == 24 and records[0] == first_letter_records(24, seed=1)[0]
    result = tinkerplug_runner.run(config_path, "-q")
    assert result.exit_code == 0, result.output
    assert len(result.train_rows) == 3
    counts = json.loads((result.run_dir / "config.json").read_text())["data_counts"]
    assert counts == [{"path": "mem:letters:24", "weight": 1.0, "records": 24, "examples": 24}]


def test_on_message_gets_notes_and_warnings(tinkerplug_runner):
    plugin = tinkerplug_runner.write_plugin("message_log", MESSAGE_LOG)
    long = [{"messages": [{"role": "user", "content": "Repeat: x"}, {"role": "assistant", "content": "x" * 300}]}] * 2
    tinkerplug_runner.write_data(first_letter_records(16) + long)
    config_path = tinkerplug_runner.write_config(num_steps=2, max_length=48)
    log = tinkerplug_runner.path / "messages.jsonl"
    result = tinkerplug_runner.run(config_path, "-q", "-p", str(plugin), env={"MESSAGE_LOG": str(log)})
    assert result.exit_code == 0, result.output
    messages = [json.loads(line) for line in log.read_text().splitlines()]
    assert {m["level"] for m in messages} == {"note", "warning"} and all(m["steps"] == 2 for m in messages)
    warnings = [m["text"] for m in messages if m["level"] == "warning"]
    assert any("2 dropped as longer than max_length=48" in w for w in warnings), warnings
    assert any(m["text"].startswith("data: ") for m in messages if m["level"] == "note"), messages


def test_fetch_sampler_weights_answers_only_for_its_own_paths(tinkerplug_runner, tmp_path):
    config_path = tinkerplug_runner.write_config()
    record = CheckpointRecord(step=4, epoch=0, batch=4, state_path="mine://w/4", sampler_path="mine://s/4", time=0.0)
    config, plugins = tinkerplug_runner.load(config_path)
    # only the first-party tinker plugin answers, and not for paths that are not tinker://
    assert plugins.fetch_sampler_weights(record, config, str(tmp_path)) is False
    plugin = tinkerplug_runner.write_plugin("fetch_mine", FETCH_LOCAL)
    config, plugins = tinkerplug_runner.load(config_path, plugin_options=[str(plugin)])
    assert plugins.fetch_sampler_weights(record, config, str(tmp_path)) is True  # the first answer wins
    assert (tmp_path / "adapter_config.json").is_file()
    local = CheckpointRecord(step=4, epoch=0, batch=4, state_path="/x/w", sampler_path="/x/s", time=0.0)
    assert plugins.fetch_sampler_weights(local, config, str(tmp_path)) is False
