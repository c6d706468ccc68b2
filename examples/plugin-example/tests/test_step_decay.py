"""How to test a tinkerplug plugin: the schedule as a plain function, and the hook as
tinkerplug calls it (the installed plugin manager and a real config file). No training."""

from __future__ import annotations

import pytest

from tinkerplug.cli import load_run_config
from tinkerplug.errors import ConfigError
from tinkerplug_step_decay import step_decay

CONFIG = """
base_model = "tiny-chat"
learning_rate = 1e-3
warmup_steps = 2
[data]
train = "train.jsonl"
[step_decay]
enabled = true
milestones = [0.5, 0.75]
gamma = 0.1
"""


def test_schedule():
    lrs = [step_decay(s, 8, 1e-3, 2, [0.5, 0.75], 0.1) for s in range(8)]
    assert lrs == pytest.approx([5e-4, 1e-3, 1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5])


def test_plugin_answers_lr_for_step(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(CONFIG)
    config, plugins = load_run_config(str(path), (), ())
    assert "step_decay" in plugins.info  # found through its entry point
    lrs = [plugins.first("lr_for_step", step=s, num_steps=8, config=config) for s in range(8)]
    assert lrs[4] == pytest.approx(1e-4) and lrs[7] == pytest.approx(1e-5)


def test_disabled_by_default_and_validated(tmp_path):
    path = tmp_path / "config.toml"
    path.write_text(CONFIG.replace("enabled = true", "enabled = false"))
    config, plugins = load_run_config(str(path), (), ())
    # the first-party cosine schedule answers instead
    assert plugins.first("lr_for_step", step=4, num_steps=8, config=config) != pytest.approx(1e-4)
    with pytest.raises(ConfigError, match="step_decay.milestones"):
        load_run_config(str(path), ("step_decay.milestones=[0.8, 0.2]",), ())
