"""Objectives as plugins (``objective = "sft" | "rl" | "dpo" | "distill"`` or a plugin's),
``init_from``, rewards: real short runs of tiny-chat on the fast task, in this process."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from conftest import DATA, read_jsonl, write_config
from tinkerplug.cli import main

RL_TABLE = "[rl]\ngroup_size = 4\nmax_tokens = 4\n"

CONSTANT_OBJECTIVE = '''
import tinkerplug
from tinkerplug.hook_types import StepBatch


class FirstExampleOnly:
    """A third party's objective: SFT on the first example of each step's batch."""

    def __init__(self, data):
        self.data = data

    async def batch(self, step):
        return StepBatch(self.data.batch(step)[:1], metrics={"mine/step": float(step)})


@tinkerplug.hookimpl
def register_objectives(register):
    register("first_only", "SFT on one example a step")


@tinkerplug.hookimpl
def make_objective(config, data):
    return FirstExampleOnly(data) if config.objective == "first_only" else None
'''

FIRST_LETTER_REWARD = '''
import tinkerplug

CALLS = []


def starts_right(completion, record, config):
    CALLS.append(completion)
    reference = record["messages"][-1]["content"]
    return float(completion[:1] == reference[:1])


@tinkerplug.hookimpl
def register_rewards(register):
    register("starts_right", starts_right)
'''


def _rows(run_dir: Path) -> list[dict]:
    return [r for r in read_jsonl(run_dir / "metrics.jsonl") if "train/loss" in r]


def test_sft_is_the_default_objective_and_config_json_says_so(tmp_path):
    config = write_config(tmp_path, num_steps=2)
    main(["run", str(config), "-q"])
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved["objective"] == "sft" and saved["init_from"] is None
    assert all(math.isfinite(r["train/loss"]) for r in _rows(tmp_path / "run"))


def test_a_project_file_adds_an_objective(tmp_path):
    (tmp_path / "mine.py").write_text(CONSTANT_OBJECTIVE)
    config = write_config(tmp_path, num_steps=3, objective="first_only", plugins=[str(tmp_path / "mine.py")])
    main(["run", str(config), "-q"])
    rows = _rows(tmp_path / "run")
    assert [r["train/examples"] for r in rows] == [1, 1, 1]
    assert [r["mine/step"] for r in rows] == [0.0, 1.0, 2.0]


def test_rl_samples_groups_scores_them_and_logs_per_reward_metrics(tmp_path):
    (tmp_path / "reward.py").write_text(FIRST_LETTER_REWARD)
    text = RL_TABLE + "[rl.rewards]\nexact_match = 1.0\nstarts_right = 0.5\n"
    config = write_config(tmp_path, text, num_steps=3, batch_size=4, objective="rl", plugins=[str(tmp_path / "reward.py")])
    main(["run", str(config), "-q"])
    rows = _rows(tmp_path / "run")
    assert len(rows) == 3
    for row in rows:
        for key in ("rl/reward", "rl/reward_std", "rl/reward/exact_match", "rl/reward/starts_right",
                    "rl/zero_variance_groups", "rl/completion_tokens", "rl/sampler_learner_kl", "time/sample_s"):
            assert math.isfinite(row[key]), key
        total = row["rl/reward/exact_match"] + 0.5 * row["rl/reward/starts_right"]
        assert row["rl/reward"] == pytest.approx(total)
        assert abs(row["rl/sampler_learner_kl"]) < 1e-3  # on-policy: the sampler is the learner
    assert "rl/kl_reference" in rows[0]  # kl_every = 10: step 0


@pytest.mark.parametrize("loss", ["ppo", "cispo", "dro", "gspo"])  # importance_sampling and stable_reinforce: above and below
def test_every_rl_loss_the_settings_offer_trains(tmp_path, loss):
    """Each loss ``[rl] loss`` accepts gets the inputs it needs (gspo: ``sequence_ratio_mask``
    over the sampled tokens) and trains: a finite loss at every step, over the sampled tokens."""
    from tinkerplug_rl.settings import RL_LOSSES

    assert loss in RL_LOSSES
    config = write_config(tmp_path, RL_TABLE + f'loss = "{loss}"\n', num_steps=2, batch_size=4, objective="rl")
    main(["run", str(config), "-q"])
    rows = _rows(tmp_path / "run")
    assert [r["step"] for r in rows] == [0, 1] and all(math.isfinite(r["train/loss_sum"]) for r in rows)
    for r in rows:  # the tokens trained are the sampled ones (4 prompts x 4 samples), not the prompts too
        assert r["train/trained_tokens"] == pytest.approx(r["rl/completion_tokens"] * 16)
        assert r["train/trained_tokens"] < r["train/input_tokens"]


@pytest.mark.parametrize("objective", ["rl", "distill"])
def test_text_records_for_a_sampling_objective_are_refused_naming_the_row(tmp_path, capsys, objective):
    """RL and distillation sample answers to chat prompts: a text record is refused with its
    file and row, before the run dir exists (not a KeyError to report)."""
    rows = tmp_path / "text.jsonl"
    rows.write_text('{"text": "hello there"}\n' * 40)
    extra = RL_TABLE if objective == "rl" else '[distill]\nteacher = "tiny-chat"\n'
    config = _with_train(write_config(tmp_path, extra, num_steps=2, batch_size=4, objective=objective), rows)
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(config), "-q"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    assert "text.jsonl" in err and f"objective {objective!r} answers the prompts of chat records" in err, err
    assert "Traceback" not in err and "KeyError" not in err and not (tmp_path / "run").exists()


def test_eval_chat_and_plot_work_on_an_rl_run(tmp_path, capsys):
    config = write_config(tmp_path, RL_TABLE, num_steps=2, batch_size=4, objective="rl")
    main(["run", str(config), "-q"])
    run_dir = str(tmp_path / "run")
    capsys.readouterr()
    main(["eval", run_dir, "--json", "--set", "heldout.limit=4"])
    assert "heldout/exact_match" in capsys.readouterr().out
    main(["chat", run_dir, "--prompt", "First letter: hello", "--max-tokens", "4", "--temperature", "0"])  # greedy: a random seed could sample end-of-turn first
    assert capsys.readouterr().out.strip()
    main(["plot", run_dir, "--out", str(tmp_path / "curves.png")])
    out = capsys.readouterr().out
    assert "rl/reward" in out and "rl/zero_variance_groups" in out and (tmp_path / "curves.png").is_file()


def test_the_docs_tables_are_what_the_script_prints_for_the_recorded_runs():
    import sys

    from conftest import ROOT

    sys.path.insert(0, str(ROOT / "scripts"))
    from post_training import DOC, EXAMPLES, docs_block, render

    text = DOC.read_text(encoding="utf-8")
    for name in EXAMPLES:
        begin, end = docs_block(name)
        shown = text.split(begin, 1)[1].split(end, 1)[0]
        assert shown == "\n" + render(name, ROOT / "examples" / name / "recorded"), (
            f"docs/tutorial/post-training.md: the {name} table is stale; run `python scripts/post_training.py --update-docs`"
        )


def test_rewards_are_registered_by_plugins():
    from tinkerplug.plugin_loader import load_plugins

    registered = load_plugins().register_rewards()
    assert {"exact_match", "math"} <= set(registered)
    exact = registered["exact_match"][1]
    record = {"messages": [{"role": "user", "content": "2+2"}, {"role": "assistant", "content": "4"}]}
    assert exact(" 4 ", record, None) == 1.0 and exact("5", record, None) == 0.0
    assert registered["math"][1]("so \\boxed{4.0}", record, None) == 1.0


def test_group_advantages_are_centred_and_optionally_normalized():
    from tinkerplug_rl.objective import group_advantages

    assert group_advantages([1.0, 0.0, 0.0, 1.0], False) == [0.5, -0.5, -0.5, 0.5]
    assert group_advantages([1.0, 0.0], True) == pytest.approx([1.0, -1.0], abs=1e-4)
    assert group_advantages([1.0, 1.0], True) == [0.0, 0.0]


def test_init_from_loads_the_weights_with_a_fresh_optimizer_and_records_them(tmp_path):
    first = write_config(tmp_path, num_steps=4, save_every=2)
    main(["run", str(first), "-q"])
    second_dir = tmp_path / "second"
    second_dir.mkdir()
    config = write_config(second_dir, num_steps=2, init_from=f"{tmp_path / 'run'}:2")
    main(["run", str(config), "-q"])
    saved = json.loads((second_dir / "run" / "config.json").read_text())
    assert saved["init_from_path"].endswith("step-000002")
    step0 = [r for r in read_jsonl(second_dir / "run" / "metrics.jsonl") if r["step"] == 0 and "eval/nll/loss" in r]
    first_rows = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["step"] == 0 and "eval/nll/loss" in r]
    assert step0[0]["eval/nll/loss"] < first_rows[0]["eval/nll/loss"]  # trained weights, not the base


BAD = {
    "unknown objective": ({"objective": "rll"}, "", ["objective 'rll' is not a registered objective", "did you mean 'rl'?"]),
    "unknown loss": ({"objective": "rl"}, "[rl]\nloss = \"ppoo\"\n", ["rl.loss", "unknown loss 'ppoo'", "did you mean 'ppo'?"]),
    "group of one": ({"objective": "rl"}, "[rl]\ngroup_size = 1\n", ["rl.group_size", "at least 2"]),
    "unknown reward": ({"objective": "rl"}, "[rl.rewards]\nexact_mach = 1.0\n", ["'exact_mach' is not a registered reward", "did you mean 'exact_match'?"]),
    "init_from missing": ({"init_from": "/nowhere/run"}, "", ["init_from = '/nowhere/run': no such run dir or checkpoint"]),
}


@pytest.mark.parametrize("name", BAD)
def test_bad_objective_settings_get_one_clear_message(name, tmp_path, capsys):
    keys, text, expected = BAD[name]
    config = write_config(tmp_path, text, **keys)
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(config), "-q"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2, err
    for part in expected:
        assert part in err, err
    assert "Traceback" not in err and not (tmp_path / "run").exists()


def test_init_from_a_run_on_another_base_model_is_refused(tmp_path, capsys):
    other = tmp_path / "other"
    other.mkdir()
    (other / "checkpoints.jsonl").write_text(json.dumps({
        "step": 5, "epoch": 0, "batch": 5, "state_path": str(other / "s"), "sampler_path": str(other / "p"),
        "time": 0.0, "final": True, "removed": False}) + "\n")
    (other / "config.json").write_text(json.dumps({"base_model": "Qwen/Qwen3-8B"}))
    config = write_config(tmp_path, init_from=str(other))
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(config), "-q"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "trained on base model 'Qwen/Qwen3-8B', not 'tiny-chat'" in err, err
    assert not (tmp_path / "run").exists()


BROKEN_REWARDS = {
    "raises": "def broken(completion, record, config):\n    raise KeyError('answer')\n",
    "not a number": "def broken(completion, record, config):\n    return 'yes'\n",
    "nan": "def broken(completion, record, config):\n    return float('nan')\n",
    "infinite": "def broken(completion, record, config):\n    return float('inf')\n",
}
RUN_END_SPY = '''
import json, os
import tinkerplug

@tinkerplug.hookimpl
def register_rewards(register):
    register("broken", broken)

@tinkerplug.hookimpl
def on_run_end(run, summary):
    (run.run_dir / "end.json").write_text(json.dumps({"error": summary.get("error")}))
'''


@pytest.mark.parametrize("name", BROKEN_REWARDS)
def test_a_broken_reward_stops_the_run_cleanly_naming_it_and_the_record(name, tmp_path, capsys):
    (tmp_path / "bad.py").write_text(BROKEN_REWARDS[name] + RUN_END_SPY)
    text = RL_TABLE + "[rl.rewards]\nbroken = 1.0\n"
    config = write_config(tmp_path, text, num_steps=2, batch_size=4, objective="rl", plugins=[str(tmp_path / "bad.py")])
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(config), "-q"])
    err = capsys.readouterr().err
    assert exit_info.value.code != 0 and "Traceback" not in err
    assert "reward 'broken' (plugin 'project:bad')" in err and "fast_train.jsonl:" in err, err
    end = json.loads((tmp_path / "run" / "end.json").read_text())
    assert "reward 'broken'" in end["error"]
    assert not (tmp_path / "run" / "checkpoints.jsonl").exists() or read_jsonl(tmp_path / "run" / "checkpoints.jsonl")


def _pairs(directory: Path, lines: int = 64, drop: str | None = None) -> Path:
    """TRL preference records from the fast task: the right first letter over a wrong one."""
    out = []
    for record in read_jsonl(DATA / "fast_train.jsonl")[:lines]:
        prompt, answer = record["messages"][0]["content"], record["messages"][1]["content"]
        row = {"prompt": prompt, "chosen": answer, "rejected": "z" if answer != "z" else "y"}
        if drop:
            row.pop(drop)
        out.append(row)
    path = directory / "pairs.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in out))
    return path


def _with_train(config: Path, train: Path) -> Path:
    text = config.read_text().replace(json.dumps(str(DATA / "fast_train.jsonl")), json.dumps(str(train)))
    config.write_text(text)
    return config


def test_dpo_trains_on_preference_pairs_against_the_reference(tmp_path):
    config = _with_train(write_config(tmp_path, "[dpo]\nbeta = 0.5\n", num_steps=3, batch_size=4, objective="dpo"), _pairs(tmp_path))
    main(["run", str(config), "-q"])
    rows = _rows(tmp_path / "run")
    for row in rows:
        for key in ("dpo/loss", "dpo/accuracy", "dpo/margin", "dpo/chosen_logprob", "dpo/rejected_logprob"):
            assert math.isfinite(row[key]), key
        assert row["train/loss"] == row["dpo/loss"]
    assert abs(rows[0]["dpo/margin"]) < 1e-4 and rows[0]["dpo/loss"] == pytest.approx(math.log(2), abs=1e-4)


def test_a_reference_to_a_run_dir_stays_the_checkpoint_it_was_when_the_run_started(tmp_path):
    """``init_from = RUN_DIR`` (no step) means that run's last checkpoint when this run starts;
    if that run trains on, a resume of this one must keep the same reference (DPO's, RL's KL,
    a teacher), or its results are not an uninterrupted run's."""
    from types import SimpleNamespace

    from tinkerplug.checkpoint_refs import reference_sampler_path, resolve_checkpoint

    first = write_config(tmp_path, num_steps=4, save_every=2)
    main(["run", str(first), "-q"])
    second_dir = tmp_path / "second"
    second_dir.mkdir()
    source = str(tmp_path / "run")
    config = _with_train(write_config(second_dir, num_steps=2, batch_size=4, objective="dpo", init_from=source), _pairs(second_dir))
    main(["run", str(config), "-q"])
    pinned = json.loads((second_dir / "run" / "config.json").read_text())["references"]["init_from"]
    rows = read_jsonl(tmp_path / "run" / "checkpoints.jsonl")
    assert pinned["sampler_path"] == rows[-1]["sampler_path"] and pinned["spec"] == source
    moved_on = {**rows[0], "step": rows[-1]["step"] + 2}  # the first run's newest checkpoint is now another one
    with open(tmp_path / "run" / "checkpoints.jsonl", "a") as out:
        out.write(json.dumps(moved_on) + "\n")
    assert resolve_checkpoint(source, "init_from").sampler_path == rows[0]["sampler_path"]
    resumed = SimpleNamespace(run_dir=str(second_dir / "run"), init_from=source)
    assert reference_sampler_path(resumed) == pinned["sampler_path"]


def test_dpo_loss_matches_the_formula():
    import torch
    from tinker import types

    from tinkerplug_dpo.objective import dpo_loss

    datums = [types.Datum(model_input=types.ModelInput.from_ints([1, 2]), loss_fn_inputs={"target_tokens": [2, 3], "weights": [0.0, 1.0]})] * 2
    logprobs = [torch.tensor([-5.0, -1.0], requires_grad=True), torch.tensor([-5.0, -2.0], requires_grad=True)]
    loss, metrics = dpo_loss(0.5, [(-1.5, -1.5)])(datums, logprobs)
    expected = -torch.nn.functional.logsigmoid(torch.tensor(0.5 * ((-1.0 + 1.5) - (-2.0 + 1.5))))
    assert float(loss.detach()) == pytest.approx(float(expected)) and metrics["dpo/accuracy"] == 1.0
    loss.backward()
    assert logprobs[0].grad[0] == 0 and logprobs[0].grad[1] < 0 < logprobs[1].grad[1]


@pytest.mark.parametrize("mode", ["off_policy", "on_policy", "top_k"])
def test_distill_from_a_run_dir_teacher_logs_teacher_kl(mode, tmp_path):
    teacher_dir = tmp_path / "teacher"
    teacher_dir.mkdir()
    main(["run", str(write_config(teacher_dir, num_steps=4)), "-q"])
    text = f'[distill]\nteacher = {json.dumps(str(teacher_dir / "run"))}\nmode = "{mode}"\nmax_tokens = 4\nsamples_per_prompt = 2\n'
    config = write_config(tmp_path, text, num_steps=2, batch_size=4, objective="distill")
    main(["run", str(config), "-q"])
    rows = _rows(tmp_path / "run")
    assert len(rows) == 2 and all(math.isfinite(r["distill/teacher_kl"]) for r in rows)
    assert all(r["train/examples"] == (4 if mode == "top_k" else 8) for r in rows)  # top_k: the records themselves


PREFERENCE_BAD = {
    "rejected missing (TRL form)": ("rejected", ["preference record has 'chosen' but no 'rejected'"]),
    "chosen missing (TRL form)": ("chosen", ["preference record has 'rejected' but no 'chosen'"]),
}


@pytest.mark.parametrize("name", PREFERENCE_BAD)
def test_preference_records_missing_a_reply_are_refused(name, tmp_path, capsys):
    drop, expected = PREFERENCE_BAD[name]
    config = _with_train(write_config(tmp_path, num_steps=2, batch_size=4, objective="dpo"), _pairs(tmp_path, drop=drop))
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(config), "-q"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "pairs.jsonl:1" in err, err
    assert all(part in err for part in expected) and "Traceback" not in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("empty", ["rejected", "chosen"])
def test_preference_records_with_an_empty_reply_are_refused(empty, tmp_path, capsys):
    """An empty reply has no token to train or compare: DPO would log a 0 margin and go on."""
    pairs = _pairs(tmp_path)
    rows = read_jsonl(pairs)
    rows[2][empty] = []
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = _with_train(write_config(tmp_path, num_steps=2, batch_size=4, objective="dpo"), pairs)
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(config), "-q"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "pairs.jsonl:3" in err and f'"{empty}" has no assistant reply' in err, err
    assert "Traceback" not in err and not (tmp_path / "run").exists()


@pytest.mark.parametrize("overlong", ["truncate", "drop"])
def test_dpo_holds_both_replies_to_max_length(overlong, tmp_path, capsys):
    """max_length and overlong apply to the rejected reply as to the chosen one: truncated, or
    the record refused naming its row (the data's check sees the chosen reply only)."""
    pairs = _pairs(tmp_path)
    rows = read_jsonl(pairs)
    for row in rows:
        row["rejected"] = "z" * 300
    pairs.write_text("".join(json.dumps(r) + "\n" for r in rows))
    config = _with_train(write_config(tmp_path, num_steps=2, batch_size=4, objective="dpo", max_length=40, overlong=overlong), pairs)
    if overlong == "truncate":
        main(["run", str(config), "-q"])
        assert all(r["train/input_tokens"] <= 8 * 40 for r in _rows(tmp_path / "run"))
        return
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(config), "-q"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "pairs.jsonl:" in err and "the rejected reply makes" in err, err
    assert "more than max_length = 40" in err and "Traceback" not in err


def test_dpo_on_chat_records_without_pairs_is_refused(tmp_path, capsys):
    config = write_config(tmp_path, num_steps=2, batch_size=4, objective="dpo")
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(config), "-q"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "objective 'dpo' needs preference records" in err and "fast_train.jsonl:" in err, err
    assert not (tmp_path / "run").exists()


def _other_tokenizer_model(directory: Path) -> Path:
    """tiny-chat with one more token in its vocabulary: another tokenizer."""
    import shutil

    import tinkerplug.models

    source = Path(tinkerplug.models.__file__).parent / "tiny-chat"
    model = directory / "other-model"
    shutil.copytree(source, model)
    tokenizer = json.loads((model / "tokenizer.json").read_text())
    vocab = tokenizer["model"]["vocab"]
    vocab["zzextra"] = max(vocab.values()) + 1000
    (model / "tokenizer.json").write_text(json.dumps(tokenizer))
    return model


TEACHER_BAD = {
    "missing": (lambda d: "/nowhere/teacher-run", ["[distill] teacher = '/nowhere/teacher-run'", "not a run dir, checkpoint or base model"]),
    "another tokenizer": (lambda d: str(_other_tokenizer_model(d)), ["has another tokenizer than the student"]),
    "a step the run dir lacks": (lambda d: f"{_trained_run(d)}:999", ["has no checkpoint at step 999", "checkpoint steps: 2"]),
}


def _trained_run(directory: Path) -> Path:
    teacher = directory / "teacher"
    teacher.mkdir()
    main(["run", str(write_config(teacher, num_steps=2)), "-q"])
    return teacher / "run"


@pytest.mark.parametrize("name", TEACHER_BAD)
def test_a_bad_teacher_is_refused_clearly(name, tmp_path, capsys):
    make, expected = TEACHER_BAD[name]
    text = f"[distill]\nteacher = {json.dumps(make(tmp_path))}\n"
    config = write_config(tmp_path, text, num_steps=2, batch_size=4, objective="distill")
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(config), "-q"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and all(part in err for part in expected) and "Traceback" not in err, err
    assert not (tmp_path / "run").exists()


def test_rl_with_stable_reinforce_samples_with_stability_info_and_sends_provenance(tmp_path):
    """``[rl] loss = "stable_reinforce"``: the sampler records, every datum names its sequence
    (a datum without provenance would be refused), and the run trains on-policy."""
    config = write_config(tmp_path, RL_TABLE + 'loss = "stable_reinforce"\n', num_steps=3, batch_size=4, objective="rl")
    main(["run", str(config), "-q"])
    rows = _rows(tmp_path / "run")
    assert len(rows) == 3 and all(math.isfinite(r["train/loss"]) for r in rows)
    assert all(abs(r["rl/sampler_learner_kl"]) < 1e-3 for r in rows)
    from tinkerplug_rl.settings import RLSettings

    with pytest.raises(ValueError, match="stable_reinforce.* needs provenance spans, which the cookbook 0.5.8 environment"):
        RLSettings(env="envs.py:make", loss="stable_reinforce")


FIRST_LETTER_ENV = '''
from functools import partial

from tinker_cookbook.rl.problem_env import ProblemEnv, ProblemGroupBuilder
from tinker_cookbook.rl.types import RLDataset


class FirstLetter(ProblemEnv):
    def __init__(self, renderer, word):
        super().__init__(renderer, format_coef=0.0)
        self.word = word

    def get_question(self):
        return f"First letter: {self.word}"

    def check_answer(self, response):
        return response.strip() == self.word[0]

    def check_format(self, response):
        return True

    def get_reference_answer(self):
        return self.word[0]


class Words(RLDataset):
    def __init__(self, renderer):
        self.renderer = renderer
        self.words = ["apple", "banana", "cherry", "dates", "elder", "figs", "grape", "honey"]

    def get_batch(self, index):
        words = self.words[(index * 2) % 8:(index * 2) % 8 + 2]
        return [ProblemGroupBuilder(env_thunk=partial(FirstLetter, self.renderer, w), num_envs=4) for w in words]

    def __len__(self):
        return 4


def make(renderer, config):
    return Words(renderer)
'''


def test_rl_trains_on_a_cookbook_environment(tmp_path):
    (tmp_path / "words_env.py").write_text(FIRST_LETTER_ENV)
    text = '[rl]\ngroup_size = 4\nmax_tokens = 4\nenv = "words_env.py:make"\n'
    config = write_config(tmp_path, text, num_steps=2, batch_size=4, objective="rl")
    main(["run", str(config), "-q"])
    rows = _rows(tmp_path / "run")
    assert len(rows) == 2 and all(r["train/examples"] == 8 for r in rows)  # 2 groups of 4 a step
    assert all(0 <= r["rl/reward"] <= 1 and abs(r["rl/sampler_learner_kl"]) < 1e-3 for r in rows)
