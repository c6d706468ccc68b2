"""Config loading: validation messages name the file, line and key."""

from __future__ import annotations

from pathlib import Path

import pytest

from tinkerplug.config import load_config, parse_override
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
