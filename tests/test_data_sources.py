"""Data in every common form: file types (JSON, CSV, Parquet, Arrow, directories, Hugging Face
data sets) and record formats (messages, prompt/completion, Alpaca, ShareGPT, text), each read
into the chat records the renderers take, with errors that name the file and row."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tinkerplug.errors import DataError
from tinkerplug_data.files import read_arrow, read_csv, read_directory, read_json, read_parquet
from tinkerplug_data.formats import detect_format, to_record
from tinkerplug_data.hf import read_hf

CHAT = [{"role": "user", "content": "Reverse: ab"}, {"role": "assistant", "content": "ba"}]
# One record of each format, and the chat it must become.
EXAMPLES = {
    "messages": ({"messages": CHAT}, CHAT),
    "prompt_completion": ({"prompt": "Reverse: ab", "completion": "ba"}, CHAT),
    "prompt_completion_lists": ({"prompt": CHAT[:1], "completion": CHAT[1:]}, CHAT),
    "alpaca": ({"instruction": "Reverse", "input": "ab", "output": "ba"},
               [{"role": "user", "content": "Reverse\n\nab"}, {"role": "assistant", "content": "ba"}]),
    "alpaca_no_input": ({"instruction": "Reverse: ab", "input": "", "output": "ba"}, CHAT),
    "sharegpt": ({"conversations": [{"from": "human", "value": "Reverse: ab"}, {"from": "gpt", "value": "ba"}]}, CHAT),
}


def _no_jsonl(*args):
    raise AssertionError("not JSONL")


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_each_format_is_detected_and_becomes_chat(name):
    row, chat = EXAMPLES[name]
    fmt = detect_format(row, "x")
    assert fmt == name.replace("_lists", "").replace("_no_input", "")
    assert to_record(row, fmt, "x") == {"messages": chat}


def test_text_records_stay_text_and_sharegpt_system_is_kept():
    assert to_record({"text": "hello"}, detect_format({"text": "hello"}, "x"), "x") == {"text": "hello"}
    row = {"system": "Be brief.", "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}
    assert to_record(row, "sharegpt", "x")["messages"][0] == {"role": "system", "content": "Be brief."}


def test_records_that_fit_no_format_name_the_row_and_the_keys():
    with pytest.raises(DataError, match=r"f.jsonl:3: record fits no data format \(its keys: answer, question\)") as info:
        detect_format({"question": "q", "answer": "a"}, "f.jsonl:3")
    assert "alpaca" in info.value.hint
    with pytest.raises(DataError, match="format 'alpaca' needs key 'output'"):
        to_record({"instruction": "x"}, "alpaca", "f row 2")
    with pytest.raises(DataError, match="unknown speaker 'robot'"):
        to_record({"conversations": [{"from": "robot", "value": "x"}]}, "sharegpt", "f row 1")
    with pytest.raises(DataError, match="message 1 has unknown role 'bot'"):
        to_record({"prompt": "x", "completion": [{"role": "bot", "content": "y"}]}, "prompt_completion", "f row 1")


def _rows(records):
    return [records[i] for i in range(len(records))]


def test_json_csv_parquet_arrow_read_the_same_records(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"instruction": f"Reverse: {w}", "input": "", "output": w[::-1]} for w in ("ab", "cde", "fg")]
    expected = [to_record(r, "alpaca", "x") for r in rows]
    (tmp_path / "a.json").write_text(json.dumps(rows))
    (tmp_path / "b.json").write_text(json.dumps({"data": rows}))
    (tmp_path / "c.csv").write_text("instruction,input,output\n" + "".join(f'"{r["instruction"]}",,{r["output"]}\n' for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "d.parquet")
    with pa.OSFile(str(tmp_path / "e.arrow"), "wb") as sink, pa.ipc.new_file(sink, pa.Table.from_pylist(rows).schema) as writer:
        writer.write_table(pa.Table.from_pylist(rows))
    readers = [
        read_json(tmp_path / "a.json", None, "training data", _no_jsonl),
        read_json(tmp_path / "b.json", None, "training data", _no_jsonl),
        read_csv(tmp_path / "c.csv", None, "training data"),
        read_parquet(tmp_path / "d.parquet", None, "training data"),
        read_arrow(tmp_path / "e.arrow", None, "training data"),
    ]
    for records in readers:
        assert _rows(records) == expected
        assert len(records.fingerprint()) == 64
    assert readers[2].where(1) == f"{tmp_path / 'c.csv'}:3"
    assert readers[3].where(2) == f"{tmp_path / 'd.parquet'} row 3"


def test_parquet_list_columns_and_csv_json_cells(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    # Arrow gives every message of a column the same keys: absent ones come back as None.
    rows = [{"messages": CHAT}, {"messages": [{**CHAT[0], "name": "x"}, CHAT[1]]}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "m.parquet")
    records = read_parquet(tmp_path / "m.parquet", None, "training data")
    assert records[0] == {"messages": CHAT}
    (tmp_path / "m.csv").write_text('messages\n"' + json.dumps(CHAT).replace('"', '""') + '"\n')
    assert read_csv(tmp_path / "m.csv", None, "training data")[0] == {"messages": CHAT}


def test_bad_files_are_named(tmp_path):
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError, match="bad.parquet: not a readable Parquet file") as info:
        read_parquet(tmp_path / "bad.parquet", None, "training data")
    assert "cut-off download" in info.value.hint
    (tmp_path / "bad.json").write_text('[{"messages": []},\n  {oops}]')
    with pytest.raises(DataError, match=r"bad.json:2: not valid JSON"):
        read_json(tmp_path / "bad.json", None, "training data", _no_jsonl)
    (tmp_path / "missing.csv").write_text("instruction,input\nx,y\n")
    with pytest.raises(DataError, match=r"missing.csv:2: record fits no data format \(its keys: input, instruction\)"):
        read_csv(tmp_path / "missing.csv", None, "training data")
    with pytest.raises(DataError, match=r"missing.csv: format 'alpaca' needs column 'output'; its columns: instruction, input"):
        read_csv(tmp_path / "missing.csv", "alpaca", "training data")
    with pytest.raises(DataError, match="unknown data format 'chatml'"):
        read_csv(tmp_path / "missing.csv", "chatml", "training data")


def test_directory_of_files_in_path_order(tmp_path):
    (tmp_path / "b").mkdir()
    (tmp_path / "a.json").write_text(json.dumps([EXAMPLES["alpaca"][0]]))
    (tmp_path / "b" / "c.csv").write_text("prompt,completion\nReverse: ab,ba\n")
    (tmp_path / ".hidden.json").write_text("not read")
    (tmp_path / "notes.txt").write_text("not read")

    def read_one(path: Path):
        return read_json(path, None, "d", _no_jsonl) if path.suffix == ".json" else read_csv(path, None, "d")

    records = read_directory(tmp_path, read_one, "training data")
    assert len(records) == 2 and records[1] == {"messages": CHAT}
    assert records.where(1).endswith("c.csv:2")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="training data directory .*empty has no data files"):
        read_directory(tmp_path / "empty", read_one, "training data")


def test_hf_dataset_saved_to_disk_with_splits(tmp_path):
    import datasets

    rows = [EXAMPLES["sharegpt"][0]] * 3
    datasets.DatasetDict(
        {"train": datasets.Dataset.from_list(rows), "test": datasets.Dataset.from_list(rows[:1])}
    ).save_to_disk(str(tmp_path / "ds"))
    spec = f"hf:{tmp_path / 'ds'}"
    train = read_hf(spec, None, None, "train", "training data")
    assert len(train) == 3 and train[0] == {"messages": CHAT}
    assert train.where(2) == f"{spec}[default] row 3"
    assert len(read_hf(spec, None, None, "heldout", "held-out data")) == 1  # test, the held-out default
    with pytest.raises(DataError, match="has no split 'dev'; it has: train, test"):
        read_hf(spec, "dev", None, "train", "training data")


def test_hf_hub_name_offline_fails_at_once(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    started = time.perf_counter()
    with pytest.raises(DataError, match="HF_HUB_OFFLINE is set and dataset 'nobody/nothing' is neither") as info:
        read_hf("hf:nobody/nothing:default", "train", None, "train", "training data")
    assert time.perf_counter() - started < 1.0
    assert "unset HF_HUB_OFFLINE" in info.value.hint


class _Listed:
    def __init__(self, name: str, n: int):
        self.name, self.n = name, n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return {"text": f"{self.name}{i}"}

    def where(self, i):
        return f"{self.name}:{i + 1}"

    def fingerprint(self):
        return self.name


def test_mixture_counts_are_records_times_weight_and_reproducible():
    from tinkerplug.data import DataSource
    from tinkerplug.mixture import MixtureRecords

    parts = [(DataSource("a", "train", weight=1.0), _Listed("a", 10)), (DataSource("b", "train", weight=2.5), _Listed("b", 4)),
             (DataSource("c", "train", weight=0.5), _Listed("c", 6))]
    mixture = MixtureRecords(parts, seed=3)
    assert [c["examples"] for c in mixture.counts] == [10, 10, 3] and len(mixture) == 23
    texts = [mixture[i]["text"] for i in range(len(mixture))]
    assert texts.count("b0") + texts.count("b1") + texts.count("b2") + texts.count("b3") == 10
    assert all(texts.count(f"b{i}") >= 2 for i in range(4))  # every record twice, two of them thrice
    assert texts == [MixtureRecords(parts, seed=3)[i]["text"] for i in range(23)]  # same seed, same mixture
    assert mixture.where(22).startswith("c:") and mixture.fingerprint() != MixtureRecords(parts, seed=4).fingerprint()


def test_config_takes_a_path_a_table_or_a_list_of_tables(tmp_path):
    from tinkerplug.config import load_config

    base = 'base_model = "tiny-chat"\n'
    (tmp_path / "a.toml").write_text(base + '[data]\ntrain = "t.jsonl"\nformat = "alpaca"\n')
    config = load_config(tmp_path / "a.toml")
    assert config.data.train == tmp_path.resolve() / "t.jsonl"
    assert [(s.path, s.format, s.weight) for s in config.data.train_sources()] == [(str(tmp_path.resolve() / "t.jsonl"), "alpaca", 1.0)]
    (tmp_path / "b.toml").write_text(
        base + '[[data.train]]\npath = "hf:org/name:cfg"\nsplit = "train"\n[[data.train]]\npath = "hf:./saved"\nweight = 2\n'
        '[data.heldout]\npath = "h.csv"\nformat = "prompt_completion"\n'
    )
    config = load_config(tmp_path / "b.toml")
    sources = config.data.train_sources()
    assert [(s.path, s.split, s.weight) for s in sources] == [
        ("hf:org/name:cfg", "train", 1.0), (f"hf:{tmp_path.resolve() / 'saved'}", None, 2.0)]
    held = config.data.heldout_source()
    assert held.path == str(tmp_path.resolve() / "h.csv") and held.format == "prompt_completion" and held.role == "heldout"
