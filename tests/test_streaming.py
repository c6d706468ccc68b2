"""Streaming data: records by byte offset, the render cache, rendering ahead of training, and
the runs built on them (exact resume, cache reuse, a changed data file refused on resume)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import DATA, read_jsonl
import tinkerplug.training_data as tp_streaming
from tinkerplug.cli import main
from tinkerplug.errors import DataError
from tinkerplug_data.jsonl import JsonlRecords, parse_line
from tinkerplug.prefetch import Prefetcher
from tinkerplug.render_cache import KEPT, RenderCache, RenderedExample

BASE_MODEL = os.environ.get("TINKERPLUG_TEST_MODEL", "tiny-chat")
RECORD = {"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}


def _example(n: int, status: int = KEPT) -> RenderedExample:
    return RenderedExample(status, n, np.arange(n, dtype=np.int32), np.arange(1, n + 1, dtype=np.int32), np.full(n, 0.5, np.float32))


# --- records ---------------------------------------------------------------------------


def test_records_match_the_parsed_file_and_name_their_line(tmp_path):
    lines = [json.dumps({**RECORD, "i": i}) for i in range(5)]
    path = tmp_path / "d.jsonl"
    path.write_bytes(("\ufeff" + lines[0] + "\r\n\n  \n" + "\n".join(lines[1:])).encode())  # BOM, CRLF, blanks, no final newline
    records = JsonlRecords(path)
    assert len(records) == 5
    parsed = [parse_line(line.encode(), 'x') for line in lines]
    assert [records[i] for i in range(5)] == parsed
    assert [records.where(i) for i in (0, 1, 4)] == [f"{path}:1", f"{path}:4", f"{path}:7"]


def test_a_bad_record_is_reported_with_its_line_when_read(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(RECORD) + "\n\n" + '{"messages": [\n')
    records = JsonlRecords(path)
    with pytest.raises(DataError, match=r"d.jsonl:3: not valid JSON"):
        records.check_all()


def test_the_fingerprint_follows_the_content(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps(RECORD) + "\n")
    first = JsonlRecords(path).fingerprint()
    assert JsonlRecords(path).fingerprint() == first
    path.write_text(json.dumps(RECORD).replace("yo", "ya") + "\n")  # same size, other bytes
    assert JsonlRecords(path).fingerprint() != first


# --- the render cache -------------------------------------------------------------------


def test_the_cache_keeps_examples_across_opens(tmp_path):
    cache = RenderCache(tmp_path / "c", 10)
    cache.put(3, _example(4))
    cache.put(7, _example(0, status=2))
    assert cache.get(3).tokens.tolist() == [0, 1, 2, 3]  # pending, not yet on disk
    cache.flush()
    again = RenderCache(tmp_path / "c", 10)
    got = again.get(3)
    assert got.tokens.tolist() == [0, 1, 2, 3] and got.targets.tolist() == [1, 2, 3, 4] and got.weights.tolist() == [0.5] * 4
    assert again.get(7).dropped and again.get(0) is None
    assert again.counts() == {"rendered": 2, "kept": 1, "truncated": 0, "dropped_overlong": 1, "dropped_untrained": 0, "shortest": 0, "longest": 4}
    assert again.missing() == [0, 1, 2, 4, 5, 6, 8, 9]


def test_a_cache_written_by_a_killed_run_is_not_trusted(tmp_path, monkeypatch):
    """A write killed before its rename leaves a temporary dir no later open reads (and that
    is cleared); a shard whose arrays disagree with its done.json is ignored too."""
    import tinkerplug.render_cache as rc

    cache = RenderCache(tmp_path / "c", 10)
    cache.put(1, _example(3))
    real = rc._write_json

    def killed_before_done(path, data):
        if path.name == "done.json":
            raise KeyboardInterrupt  # stands in for a SIGKILL after the arrays, before the rename
        real(path, data)

    monkeypatch.setattr(rc, "_write_json", killed_before_done)
    with pytest.raises(KeyboardInterrupt):
        cache.flush()
    monkeypatch.undo()
    (tmp := next((tmp_path / "c").glob(".tmp-*"))).rename(tmp.with_name(".tmp-999999999-dead"))
    assert (tmp_path / "c" / ".tmp-999999999-dead" / "tokens.npy").is_file()
    reopened = RenderCache(tmp_path / "c", 10)
    assert reopened.get(1) is None and reopened.counts()["rendered"] == 0
    assert not list((tmp_path / "c").glob(".tmp-*")), "a dead run's temporary dir was left"

    reopened.put(1, _example(3))
    reopened.flush()
    shard = next((tmp_path / "c").glob("shard-*"))
    (shard / "done.json").write_text(json.dumps({"records": 1, "tokens": 99}))
    assert RenderCache(tmp_path / "c", 10).get(1) is None


# --- rendering ahead ---------------------------------------------------------------------


def test_the_prefetcher_works_ahead_in_order_and_hands_errors_on():
    produced = []

    def produce(i):
        produced.append(i)
        if i == 5:
            raise ValueError("bad item")
        return i * 10

    ahead = Prefetcher(produce, 2, 9, ahead=2)
    assert [ahead.get(i) for i in (2, 3, 4)] == [20, 30, 40]
    with pytest.raises(ValueError, match="bad item"):
        ahead.get(5)
    ahead.close()
    assert produced == [2, 3, 4, 5]  # bounded: nothing after the error

    calls = []
    paused = Prefetcher(lambda i: calls.append(i) or i, 0, 100, ahead=50)
    with paused.paused():
        seen = len(calls)
        time.sleep(0.2)
        assert len(calls) == seen, "the prefetcher worked while paused"
    assert paused.get(0) == 0
    paused.close()


# --- real runs ---------------------------------------------------------------------------

COUNTER = '''
import os

import tinkerplug


@tinkerplug.hookimpl(tryfirst=True)
def render_example(example, renderer, config):
    with open(os.environ["TP_RENDER_COUNT"], "a") as f:
        f.write(".")
    return None  # the cookbook renders it


@tinkerplug.hookimpl
def log_metrics(step, metrics, run):
    if str(step) == os.environ.get("TP_FAIL_AT"):
        raise RuntimeError("stopped here")
'''


def _data(directory: Path, overlong: int = 0) -> Path:
    """96 fast-task records, ``overlong`` of them too long for max_length=64."""
    lines = (DATA / "fast_train.jsonl").read_text().splitlines()[:96]
    long = json.dumps({"messages": [{"role": "user", "content": "First letter: " + "x" * 200}, {"role": "assistant", "content": "x"}]})
    for i in range(overlong):
        lines[7 + 11 * i] = long
    path = directory / "train.jsonl"
    path.write_text("\n".join(lines) + "\n")
    return path


def _run(directory: Path, run: str, *extra: str, steps: int = 10, fail_at: int | None = None, monkeypatch=None) -> list[dict]:
    (directory / "counter.py").write_text(COUNTER)
    config = directory / "config.toml"
    config.write_text(
        f"base_model = {json.dumps(BASE_MODEL)}\nlearning_rate = 3e-3\nbatch_size = 8\nnum_steps = {steps}\n"
        "max_length = 64\nsave_every = 4\nseed = 3\n"
        f"run_dir = {json.dumps(str(directory / run))}\n[data]\ntrain = \"train.jsonl\"\n"
    )
    monkeypatch.setenv("TP_RENDER_COUNT", str(directory / "count"))
    monkeypatch.setenv("TP_FAIL_AT", "" if fail_at is None else str(fail_at))
    args = ["run", str(config), "-p", str(directory / "counter.py"), *extra]
    if fail_at is None:
        main(args)
    else:
        with pytest.raises(SystemExit):
            main(args)
    return read_jsonl(directory / run / "metrics.jsonl")


def _losses(rows: list[dict]) -> dict[int, float]:
    return {r["step"]: r["train/loss"] for r in rows if "train/loss" in r}


def _renders(directory: Path) -> int:
    path = directory / "count"
    n = len(path.read_text()) if path.exists() else 0
    path.unlink(missing_ok=True)
    return n


@pytest.fixture
def streaming(tmp_path, monkeypatch):
    """Runs that stream (nothing rendered up front) into a cache of their own."""
    monkeypatch.setattr(tp_streaming, "RENDER_ALL_UP_TO", 0)
    monkeypatch.setenv("TINKERPLUG_CACHE_DIR", str(tmp_path / "cache"))
    return monkeypatch


def test_streamed_runs_resume_exactly_and_reuse_the_cache(tmp_path, streaming, capsys):
    """With drops (replaced deterministically), streaming: an uninterrupted run, a run stopped
    at step 6 and resumed from its step-4 checkpoint, and a run with the whole data rendered
    up front give the same per-step losses; a second run on a warm cache renders nothing."""
    _data(tmp_path, overlong=6)
    whole = _losses(_run(tmp_path, "whole", monkeypatch=streaming))
    first_renders = _renders(tmp_path)
    assert 0 < first_renders < 96, "a streamed run renders only what its steps use"
    err = capsys.readouterr().err
    assert "rendering runs ahead of training" in err and "examples kept of the 96 records rendered so far" in err

    assert _losses(_run(tmp_path, "warm", monkeypatch=streaming)) == whole
    assert _renders(tmp_path) == 0, "the second run rendered examples the cache holds"

    _run(tmp_path, "stopped", fail_at=6, monkeypatch=streaming)
    streaming.setenv("TINKERPLUG_CACHE_DIR", str(tmp_path / "cold"))
    resumed = _losses(_run(tmp_path, "stopped", "--resume", monkeypatch=streaming))
    assert resumed == whole and len(resumed) == 10

    streaming.setattr(tp_streaming, "RENDER_ALL_UP_TO", 10_000)
    streaming.setenv("TINKERPLUG_CACHE_DIR", str(tmp_path / "cache-all"))
    assert _losses(_run(tmp_path, "all", monkeypatch=streaming)) == whole
    err = capsys.readouterr().err
    assert "data: 90/96 examples, 6 dropped as longer than max_length=64" in err
    _renders(tmp_path)
    _run(tmp_path, "all-again", monkeypatch=streaming)
    assert _renders(tmp_path) == 0
    assert "data: 90/96 examples" in capsys.readouterr().err  # counts from the cache, at start


def test_without_drops_the_batches_are_the_plans(tmp_path, streaming):
    from tinkerplug.batches import BatchPlan
    from tinkerplug.training_data import TrainingData

    class Config:
        batch_size, seed, max_length, overlong, loss_reduction = 4, 1, 64, "drop", "sum"

    records = JsonlRecords(_data(tmp_path))
    cache = RenderCache(tmp_path / "c", len(records))
    for i in range(len(records)):
        cache.put(i, _example(3))
    data = TrainingData(records, None, Config, None, cache)
    plan = BatchPlan(96, 4, 1)
    assert [data.batch_indices(s) for s in range(30)] == [plan.indices(s) for s in range(30)]
    cache.put(plan.indices(2)[1], _example(70, status=2))  # a dropped record is replaced
    replaced = data.batch_indices(2)
    assert replaced[0] == plan.indices(2)[0] and replaced[1] != plan.indices(2)[1]
    assert replaced == TrainingData(records, None, Config, None, cache).batch_indices(2)


def test_a_resume_on_a_changed_data_file_is_refused(tmp_path, streaming, capsys):
    data = _data(tmp_path)
    _run(tmp_path, "run", fail_at=5, monkeypatch=streaming)
    config_json = json.loads((tmp_path / "run" / "config.json").read_text())
    old = config_json["data_fingerprint"]["train"]
    data.write_text(data.read_text().replace("First letter", "First Letter", 1))
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*")}
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(tmp_path / "config.toml"), "-p", str(tmp_path / "counter.py"), "--resume"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert f'data_fingerprint.train: "{old}" -> "' in err and "Traceback" not in err
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "run").rglob("*")} == before


def test_a_bad_line_deep_in_a_big_file_stops_the_run_with_its_line(tmp_path, streaming, capsys):
    """A file too big to check before step 0 goes on being checked while training runs."""
    data = _data(tmp_path)
    data.write_text(data.read_text() + '{"messages": "nope"}\n')
    streaming.setattr(tp_streaming, "WAIT_FOR_CHECK_UP_TO", 0)
    real = JsonlRecords.check_all

    def after_the_first_step(self, stop=None):
        metrics = tmp_path / "run" / "metrics.jsonl"
        while not (metrics.exists() and metrics.stat().st_size) and not stop.is_set():
            time.sleep(0.01)
        real(self, stop)

    streaming.setattr(JsonlRecords, "check_all", after_the_first_step)
    rows = _run(tmp_path, "run", steps=500, fail_at=-1, monkeypatch=streaming)
    err = capsys.readouterr().err
    assert 0 < len(rows) < 500
    assert 'train.jsonl:97: "messages" must be a list (got str)' in err and "start a new run" in err


def test_a_bad_heldout_line_fails_before_the_run_dir_exists(tmp_path, streaming, capsys):
    _data(tmp_path)
    (tmp_path / "heldout.jsonl").write_text(json.dumps(RECORD) + "\nnot json\n")
    (tmp_path / "config.toml").write_text(
        f"base_model = {json.dumps(BASE_MODEL)}\nbatch_size = 8\nnum_steps = 2\nmax_length = 64\n"
        f"run_dir = {json.dumps(str(tmp_path / 'run'))}\n[data]\ntrain = \"train.jsonl\"\nheldout = \"heldout.jsonl\"\n"
    )
    with pytest.raises(SystemExit) as exit_info:
        main(["run", str(tmp_path / "config.toml")])
    assert exit_info.value.code == 2
    assert "heldout.jsonl:2: not valid JSON" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_text_datums_are_the_cookbooks_without_importing_its_datasets_module():
    """The cookbook plugin splits text-only examples itself (the cookbook's helper module
    imports `datasets` and pandas): the same datums, to the bit."""
    from tinker_cookbook import renderers
    from tinker_cookbook.renderers import TrainOnWhat
    from tinker_cookbook.supervised.common import datum_from_model_input_weights
    from transformers import AutoTokenizer

    from tinkerplug.models import shipped_model_dir
    from tinkerplug_cookbook.plugin import render_example

    renderer = renderers.get_renderer("role_colon", AutoTokenizer.from_pretrained(shipped_model_dir("tiny-chat")))
    for record in read_jsonl(DATA / "fast_train.jsonl")[:32]:
        for train_on_what in ("last_assistant_message", "all_messages"):
            class Config:
                pass

            Config.train_on_what = train_on_what
            model_input, weights = renderer.build_supervised_example(record["messages"], train_on_what=TrainOnWhat(train_on_what))
            theirs = datum_from_model_input_weights(model_input, weights, max_length=None, reduction="none")
            ours = render_example(record, renderer, Config)
            assert ours.model_input.to_ints() == theirs.model_input.to_ints()
            for key in ("target_tokens", "weights"):
                a, b = ours.loss_fn_inputs[key].to_numpy(), theirs.loss_fn_inputs[key].to_numpy()
                assert a.dtype == b.dtype and a.tolist() == b.tolist()
