"""How to test a tinkerplug plugin with ``tinkerplug.testing``: the schedule as a plain
function, the hook as tinkerplug calls it (the installed plugins and a real config file, no
training), and a short real run on the shipped tiny-chat model (about 4 s on a CPU)."""

from __future__ import annotations

import pytest

from tinkerplug.errors import ConfigError
from tinkerplug_step_decay import step_decay

STEP_DECAY = """
[step_decay]
enabled = true
milestones = [0.5, 0.75]
gamma = 0.1
warmup_steps = 2
"""


def test_schedule():
    lrs = [step_decay(s, 8, 1e-3, 2, [0.5, 0.75], 0.1) for s in range(8)]
    assert lrs == pytest.approx([5e-4, 1e-3, 1e-3, 1e-3, 1e-4, 1e-4, 1e-5, 1e-5])


def test_plugin_answers_lr_for_step(tinkerplug_runner):
    config_path = tinkerplug_runner.write_config(STEP_DECAY, learning_rate=1e-3)
    config, plugins = tinkerplug_runner.load(config_path)
    assert "step_decay" in plugins.info  # found through its entry point
    lrs = [plugins.lr_for_step(s, 8, config) for s in range(8)]
    assert lrs[4] == pytest.approx(1e-4) and lrs[7] == pytest.approx(1e-5)


def test_disabled_by_default_and_validated(tinkerplug_runner):
    config_path = tinkerplug_runner.write_config(STEP_DECAY.replace("enabled = true", "enabled = false"), learning_rate=1e-3)
    config, plugins = tinkerplug_runner.load(config_path)
    # the first-party cosine schedule answers instead
    assert plugins.lr_for_step(4, 8, config) != pytest.approx(1e-4)
    with pytest.raises(ConfigError, match="step_decay.milestones"):
        tinkerplug_runner.load(config_path, "step_decay.milestones=[0.8, 0.2]")


def test_a_run_follows_the_schedule(tinkerplug_runner):
    config_path = tinkerplug_runner.write_config(STEP_DECAY.replace("warmup_steps = 2", "warmup_steps = 0"), learning_rate=1e-3, num_steps=8)
    result = tinkerplug_runner.run(config_path, "-q")
    assert result.exit_code == 0, result.output
    assert [row["lr"] for row in result.train_rows] == pytest.approx([1e-3] * 4 + [1e-4] * 2 + [1e-5] * 2)
    bad = tinkerplug_runner.run(config_path, "--set", "step_decay.gamma=-1")
    assert bad.exit_code == 2 and "step_decay.gamma" in bad.output
