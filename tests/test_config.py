"""Config loading: validation messages name the file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinkerplug.config import RunConfig, load_config, parse_override
from tinkerplug.errors import ConfigError

BASE = """base_model = "tiny-chat"
learning_rate = 1e-3
lora_rank = 8
[data]
train = "train.jsonl"
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return path


def test_valid_config_resolves_paths_relative_to_the_file(tmp_path):
    config = load_config(_write(tmp_path, BASE))
    assert config.data.train == tmp_path.resolve() / "train.jsonl"
    assert config.lora_rank == 8 and config.resolved_backend == "local"


def test_overrides_are_typed(tmp_path):
    config = load_config(_write(tmp_path, BASE), ["lora_rank=4", "learning_rate=2e-4", "data.train=x.jsonl", "renderer=role_colon"])
    assert (config.lora_rank, config.learning_rate, config.renderer) == (4, 2e-4, "role_colon")
    assert config.data.train.name == "x.jsonl"
    assert parse_override("a.b=[1, 2]") == (["a", "b"], [1, 2])


@pytest.mark.parametrize(
    "text, expected",
    [
        (BASE.replace("lora_rank = 8", "lora_rank = 0"), "c.toml:3: lora_rank: Input should be greater than 0"),
        (BASE.replace("learning_rate = 1e-3", 'learning_rate = "fast"'), "c.toml:2: learning_rate: Input should be a valid number"),
        ("bogus = 1\n" + BASE, "c.toml:1: unknown key 'bogus'"),
        (BASE + "bogus = 1\n", "c.toml:6: data.bogus: unknown key"),
        (BASE.replace('base_model = "tiny-chat"\n', ""), "base_model: required key is missing"),
        ("api_key = \"tml-123\"\n" + BASE, "looks like a secret"),
        ("base_model = [", "not valid TOML"),
    ],
)
def test_invalid_configs_name_file_line_and_key(tmp_path, text, expected):
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text))
    assert expected in str(info.value)


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")


def test_table_of_a_disabled_plugin_is_ignored(tmp_path):
    text = BASE + "[inspect]\ntasks = []\n"
    with pytest.raises(ConfigError, match="unknown key 'inspect'"):
        load_config(_write(tmp_path, text))
    assert load_config(_write(tmp_path, text), disabled={"inspect"}).data.train.name == "train.jsonl"


# -- where a value came from: paths, --set, did-you-mean (issue 22 item 4) ----------------------


def test_paths_of_a_set_resolve_against_the_current_directory(tmp_path, monkeypatch):
    folder = tmp_path / "configs"
    folder.mkdir()
    path = folder / "c.toml"
    path.write_text(BASE)
    monkeypatch.chdir(tmp_path)
    assert load_config(path).data.train == folder.resolve() / "train.jsonl"  # in the file: the file's folder
    config = load_config(path, ["data.train=data/x.jsonl", "data.heldout=h.jsonl"])
    assert config.data.train == tmp_path / "data" / "x.jsonl"  # on the command line: the current dir
    assert config.data.heldout == tmp_path / "h.jsonl"
    assert config.base_dir("data.train") == tmp_path and load_config(path).base_dir("data.train") == folder.resolve()


def test_a_plugin_table_path_resolves_by_where_it_was_written(tmp_path, monkeypatch):
    from tinkerplug.config import PluginSchema

    from pydantic import BaseModel

    class Settings(BaseModel):
        tasks: list[str] = []

    schema = PluginSchema(sections={"inspect": Settings}, owners={"inspect": "inspect"})
    path = _write(tmp_path, BASE + "[inspect]\ntasks = []\n")
    monkeypatch.chdir(tmp_path.parent)
    assert load_config(path, schema=schema).base_dir("inspect.tasks") == tmp_path.resolve()
    assert load_config(path, ["inspect.tasks=[]"], schema=schema).base_dir("inspect.tasks") == tmp_path.parent


def test_run_dirs_stay_relative_to_the_current_directory(tmp_path):
    """run_dir and init_from name run dirs, which are made where tinkerplug runs: kept as
    written (resolved against the current directory), in the file too."""
    config = load_config(_write(tmp_path, 'init_from = "runs/old:4"\nrun_dir = "runs/new"\n' + BASE))
    assert (config.init_from, config.run_dir) == ("runs/old:4", Path("runs/new"))


def test_an_error_in_a_set_value_names_the_set(tmp_path):
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, BASE), ["lora_rank=abc"])
    assert "--set lora_rank=abc: lora_rank: Input should be a valid integer" in str(info.value)
    assert "c.toml" not in str(info.value)  # the file's own lora_rank = 8 is fine
    with pytest.raises(ConfigError, match=r"--set data.trian=x.jsonl: data.trian: unknown key; did you mean 'train'"):
        load_config(_write(tmp_path, BASE), ["data.trian=x.jsonl"])


@pytest.mark.parametrize(
    "text, expected",
    [
        ("lora_rnk = 4\n" + BASE, "c.toml:1: unknown key 'lora_rnk'; did you mean 'lora_rank'?"),
        (BASE + "trian = 1\n", "c.toml:6: data.trian: unknown key; did you mean 'train'? (valid keys: format, heldout, train)"),
        (BASE.replace('train = "train.jsonl"', '[[data.train]]\npath = "t.jsonl"\nweigth = 2'),
         "data.train.0.weigth: unknown key; did you mean 'weight'? (valid keys: format, path, split, weight)"),
    ],
)
def test_unknown_keys_at_any_level_get_a_did_you_mean_and_the_valid_keys(tmp_path, text, expected):
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, text))
    assert expected in str(info.value)


def test_unknown_keys_in_a_plugin_table_get_the_valid_keys_of_that_table(tmp_path):
    from pydantic import BaseModel, ConfigDict

    from tinkerplug.config import PluginSchema

    class Settings(BaseModel):
        model_config = ConfigDict(extra="forbid")
        limit: int = 0
        max_tokens: int = 8

    schema = PluginSchema(sections={"heldout": Settings}, owners={"heldout": "heldout"})
    with pytest.raises(ConfigError) as info:
        load_config(_write(tmp_path, BASE + "[heldout]\nmax_token = 4\n"), schema=schema)
    assert "heldout.max_token: unknown key; did you mean 'max_tokens'? (valid keys: limit, max_tokens) [plugin heldout]" in str(info.value)


# -- [schedule] and [executor]: the plugins' own tables; the old top-level keys still read ------


def _plugin_config(tmp_path, text, overrides=()):
    from tinkerplug.cli import load_run_config

    path = tmp_path / "c.toml"
    path.write_text('base_model = "tiny-chat"\nlearning_rate = 1e-3\n' + text + '[data]\ntrain = "t.jsonl"\n')
    return load_run_config(str(path), tuple(overrides), ())[0]


def test_schedule_and_executor_keys_live_in_their_plugins_tables(tmp_path):
    config = _plugin_config(tmp_path, "")
    assert not {"lr_schedule", "warmup_steps", "min_lr", "executor", "submit_ahead"} & set(RunConfig.model_fields)
    assert (config.section("schedule").lr_schedule, config.section("executor").name) == ("cosine", "pipelined")
    config = _plugin_config(tmp_path, "", ["schedule.min_lr=1e-4", "executor.name=sync"])
    assert (config.section("schedule").min_lr, config.section("executor").name) == (1e-4, "sync")
    assert "schedule.min_lr" in config.result_keys() and not config.deprecations


def test_old_top_level_keys_are_read_with_a_note_naming_the_new_place(tmp_path):
    config = _plugin_config(tmp_path, 'lr_schedule = "linear"\nwarmup_steps = 3\nexecutor = "sync"\nsubmit_ahead = 0\n')
    assert config.section("schedule").lr_schedule == "linear" and config.section("schedule").warmup_steps == 3
    assert (config.section("executor").name, config.section("executor").submit_ahead) == ("sync", 0)
    notes = "\n".join(config.deprecations)
    assert "c.toml:3: top-level 'lr_schedule' is deprecated; write it as [schedule] lr_schedule = 'linear'" in notes
    assert "[executor] name = 'sync'" in notes and "[executor] submit_ahead = 0" in notes
    assert _plugin_config(tmp_path, "[schedule]\nwarmup_steps = 9\n", ["warmup_steps=2"]).section("schedule").warmup_steps == 2
    with pytest.raises(ConfigError, match=r"warmup_steps is given twice: at the top level and as \[schedule\] warmup_steps"):
        _plugin_config(tmp_path, "warmup_steps = 2\n[schedule]\nwarmup_steps = 9\n")


def test_a_run_dir_from_before_the_move_resumes_with_the_same_settings(tmp_path):
    import json

    from tinkerplug.rundir import check_resume_config

    (tmp_path / "config.json").write_text(json.dumps({"lr_schedule": "cosine", "min_lr": 0.0}))
    moved = {"schedule.lr_schedule": "lr_schedule", "schedule.min_lr": "min_lr"}
    current = {"schedule": {"lr_schedule": "cosine", "min_lr": 0.0}}
    check_resume_config(tmp_path, current, "cmd", ("schedule.lr_schedule", "schedule.min_lr"), moved)
    current["schedule"]["min_lr"] = 1e-5
    with pytest.raises(ConfigError, match="schedule.min_lr: 0.0 -> 1e-05"):
        check_resume_config(tmp_path, current, "cmd", ("schedule.lr_schedule", "schedule.min_lr"), moved)


def test_a_run_says_once_where_an_old_key_moved(tinkerplug_runner):
    """The note is said where the file is read (``load_run_config``), once per command."""
    result = tinkerplug_runner.run(tinkerplug_runner.write_config(num_steps=1, lr_schedule="linear"))
    assert result.exit_code == 0, result.output
    assert result.output.count("top-level 'lr_schedule' is deprecated; write it as [schedule] lr_schedule = 'linear'") == 1
