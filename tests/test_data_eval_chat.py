"""One real run on a mixture of three sources in three file types and formats (Parquet Alpaca,
JSON ShareGPT at weight 0.5, a saved Hugging Face data set of prompt/completion pairs), with the
``nll`` evaluator on by default; then ``tinkerplug eval`` and ``tinkerplug chat`` on its
checkpoints, the held-out loss checked against a direct transformers computation, and plain
text records."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest

from conftest import DATA, ROOT, read_jsonl, run_inprocess
from tinkerplug.cli import main

STEPS = 30
QUICKSTART_TASK = ROOT / "examples" / "quickstart" / "inspect_task.py"


def _chats(n: int, skip: int = 0) -> list[list[dict]]:
    rows = [json.loads(line) for line in (DATA / "fast_train.jsonl").read_text().splitlines()]
    return [r["messages"] for r in rows[skip : skip + n]]


def write_mixture(directory: Path) -> Path:
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    alpaca = [{"instruction": m[0]["content"], "input": "", "output": m[1]["content"]} for m in _chats(64)]
    pq.write_table(pa.Table.from_pylist(alpaca), directory / "alpaca.parquet")
    sharegpt = [{"conversations": [{"from": "human", "value": m[0]["content"]}, {"from": "gpt", "value": m[1]["content"]}]} for m in _chats(32, 64)]
    (directory / "sharegpt.json").write_text(json.dumps(sharegpt))
    pairs = [{"prompt": m[0]["content"], "completion": m[1]["content"]} for m in _chats(24, 96)]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(pairs)}).save_to_disk(str(directory / "pairs"))
    config = directory / "config.toml"
    config.write_text(
        f'base_model = "tiny-chat"\nlearning_rate = 3e-3\nbatch_size = 8\nnum_steps = {STEPS}\nmax_length = 64\n'
        f'save_every = 10\neval_every = 0\nrun_dir = {json.dumps(str(directory / "run"))}\n'
        "[[data.train]]\npath = \"alpaca.parquet\"\n"
        "[[data.train]]\npath = \"sharegpt.json\"\nweight = 0.5\n"
        "[[data.train]]\npath = \"hf:./pairs\"\nsplit = \"train\"\n"
        f"[data]\nheldout = {json.dumps(str(DATA / 'fast_heldout.jsonl'))}\n"
        "[heldout]\nlimit = 16\nmax_tokens = 8\n"
    )
    return config


@pytest.fixture(scope="module")
def mixture_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("mixture")
    result = run_inprocess("run", str(write_mixture(directory)))
    assert result.returncode == 0, result.stderr
    assert "data mixture:" in result.stderr and "sharegpt.json 32 records × 0.5 = 16" in result.stderr
    return directory / "run"


def test_mixture_trains_and_reports_counts(mixture_run: Path) -> None:
    config = json.loads((mixture_run / "config.json").read_text())
    counts = {Path(c["path"]).name: (c["records"], c["examples"]) for c in config["data_counts"]}
    assert counts == {"alpaca.parquet": (64, 64), "sharegpt.json": (32, 16), "pairs": (24, 24)}
    rows = read_jsonl(mixture_run / "metrics.jsonl")
    steps = [r for r in rows if "train/loss" in r]
    assert len(steps) == STEPS and steps[-1]["train/loss"] < 0.5 * steps[0]["train/loss"]
    evals = {r["step"]: r for r in rows if "eval/nll/loss" in r}
    assert sorted(evals) == [0, STEPS]  # nll is on by default with held-out data
    first, last = evals[0], evals[STEPS]
    assert last["eval/nll/loss"] < 0.5 * first["eval/nll/loss"]
    assert first["eval/nll/tokens"] == last["eval/nll/tokens"] > 0
    assert last["eval/nll/bpb"] > 0 and "eval/heldout/exact_match" in last


def test_nll_at_step_0_matches_transformers(mixture_run: Path) -> None:
    """At step 0 the LoRA adapter is a no-op: the held-out NLL must be the base model's, computed
    here independently with transformers on the same rendered tokens."""
    import torch
    from tinker_cookbook import renderers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tinkerplug.models import shipped_model_dir

    model_dir = shipped_model_dir("tiny-chat")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    renderer = renderers.get_renderer("qwen3_instruct", tokenizer)
    total = weight = 0.0
    for line in (DATA / "fast_heldout.jsonl").read_text().splitlines():
        model_input, weights = renderer.build_supervised_example(json.loads(line)["messages"])
        tokens = torch.tensor(model_input.to_ints())
        with torch.no_grad():
            logprobs = torch.log_softmax(model(tokens[None, :-1]).logits[0].float(), -1)
        target_lp = logprobs.gather(-1, tokens[1:, None])[:, 0]
        w = (weights[1:] > 0).float()
        total += float(-(target_lp * w).sum())
        weight += float(w.sum())
    row = next(r for r in read_jsonl(mixture_run / "metrics.jsonl") if r["step"] == 0 and "eval/nll/loss" in r)
    assert row["eval/nll/tokens"] == weight
    assert math.isclose(row["eval/nll/loss"], total / weight, rel_tol=1e-4), (row["eval/nll/loss"], total / weight)


def test_eval_command_reproduces_the_runs_final_evals(mixture_run: Path, capsys: pytest.CaptureFixture) -> None:
    main(["eval", str(mixture_run)])
    out = capsys.readouterr().out
    assert f"step {STEPS}" in out and "eval/nll/loss" in out and "eval/heldout/exact_match" in out
    saved = json.loads((mixture_run / "evals" / f"step-{STEPS}.json").read_text())
    final = next(r for r in read_jsonl(mixture_run / "metrics.jsonl") if r["step"] == STEPS and "eval/nll/loss" in r)
    for key in ("eval/nll/loss", "eval/nll/bpb", "eval/nll/tokens", "eval/heldout/exact_match"):
        assert math.isclose(saved["metrics"][key], final[key], rel_tol=1e-5, abs_tol=1e-9), key

    # An earlier checkpoint, with an override and only the Inspect task: added, nothing lost.
    main(["eval", str(mixture_run), "--step", "10", "--set", "inspect.limit=4", "--task", f"{QUICKSTART_TASK}@subtraction", "--json"])
    metrics = json.loads(capsys.readouterr().out)
    assert "eval/subtraction/exact/mean" in metrics and "eval/nll/loss" not in metrics
    main(["eval", str(mixture_run), "--step", "10", "-p", "no:inspect", "-p", "no:heldout"])
    capsys.readouterr()
    at_10 = json.loads((mixture_run / "evals" / "step-10.json").read_text())
    assert len(at_10["history"]) == 2 and "eval/nll/loss" in at_10["metrics"]
    assert "eval/subtraction/exact/mean" in at_10["metrics"]


def test_eval_reports_a_failing_evaluator_and_keeps_the_others(mixture_run: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken.py"
    broken.write_text("import tinkerplug\n\n@tinkerplug.hookimpl\ndef evaluate(context):\n    raise ValueError('no luck')\n")
    result = run_inprocess("eval", str(mixture_run), "--step", "20", "-p", str(broken), "-p", "no:inspect")
    assert result.returncode == 3, result.stderr
    assert "plugin 'project:broken'" in result.stderr and "no luck" in result.stderr and "Traceback" not in result.stderr
    saved = json.loads((mixture_run / "evals" / "step-20.json").read_text())
    assert saved["history"][-1]["failed"] == ["project:broken"] and "eval/nll/loss" in saved["metrics"]


def test_chat_answers_once_and_interactively(mixture_run: Path) -> None:
    question = _chats(1)[0][0]["content"]  # a training prompt: the trained model knows it
    expected = _chats(1)[0][1]["content"]
    once = run_inprocess("chat", str(mixture_run), "--prompt", question, "--temperature", "0", "--max-tokens", "8")
    assert once.returncode == 0, once.stderr
    assert once.stdout.strip() == expected

    # Interactive: reading its stdin turn by turn; the second turn sees the first.
    lines = f"{question}\nWhat did I just ask?\n/reset\n{question}\n/quit\nnever read\n"
    chat = run_inprocess("chat", str(mixture_run), "--temperature", "0", "--max-tokens", "8", "--base", input=lines)
    assert chat.returncode == 0, chat.stderr
    replies = re.findall(r"^\[(step \d+|base)\] (.*)$", chat.stdout, re.M)
    assert [label for label, _ in replies] == [f"step {STEPS}", "base"] * 3, chat.stdout
    assert replies[0][1] == expected and replies[4] == replies[0]  # after /reset: the first turn again
    assert "conversation reset" in chat.stderr


def test_text_records_train_on_every_token(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from tinkerplug.models import shipped_model_dir
    from tinkerplug_data.text import text_datum

    tokenizer = AutoTokenizer.from_pretrained(shipped_model_dir("tiny-chat"))
    datum = text_datum("reverse abc cba", tokenizer)
    weights = datum.loss_fn_inputs["weights"].tolist()
    targets = datum.loss_fn_inputs["target_tokens"].tolist()
    assert all(w == 1.0 for w in weights) and targets[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(datum.model_input.to_ints()[:1] + targets[:-1]) == "reverse abc cba"

    data = tmp_path / "text.jsonl"
    data.write_text("".join(json.dumps({"text": f"{m[0]['content']} -> {m[1]['content']}"}) + "\n" for m in _chats(32)))
    config = tmp_path / "config.toml"
    config.write_text(
        f'base_model = "tiny-chat"\nlearning_rate = 3e-3\nbatch_size = 8\nnum_steps = 12\nmax_length = 64\n'
        f'run_dir = {json.dumps(str(tmp_path / "run"))}\n[data]\ntrain = "text.jsonl"\nheldout = "text.jsonl"\n'
    )
    main(["run", str(config), "-q"])
    rows = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    evals = [r for r in rows if "eval/nll/loss" in r]
    assert evals[-1]["eval/nll/loss"] < evals[0]["eval/nll/loss"]
    assert "eval/heldout/exact_match" not in evals[-1]  # no reply to match in a text record
