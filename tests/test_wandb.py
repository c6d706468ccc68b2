"""The W&B logger, offline (``WANDB_MODE=offline``): what it writes is read back from the run's
``.wandb`` file (config, tags, every step once, eval tables), a resume continues the same W&B
run, and no API key reaches it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from conftest import run_cli, write_config

pytest.importorskip("wandb")

FAKE_KEY = "tml-FAKE0SECRET0do0not0write0me0anywhere"
# A project plugin that fails at step 7, as a crash would: steps 0-6 are logged, step 5 checkpointed.
CRASH_AT_7 = "import tinkerplug\n\n@tinkerplug.hookimpl(tryfirst=True)\ndef log_metrics(step, metrics, run):\n    if step == 7:\n        raise RuntimeError('crash at step 7')\n"


def wandb_records(path: Path) -> list:
    """The records of a ``.wandb`` file (W&B's LevelDB-style log of protobuf ``Record``s:
    a 7-byte file header, then 32 KiB blocks of chunks with crc32, length and type)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    pos, block, records, buf = 7, 32768, [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        if left < 7 or (length == 0 and kind == 0):  # block trailer / padding
            pos += left
            continue
        buf += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST chunk: a whole record
            record = pb.Record()
            record.ParseFromString(buf)
            records.append(record)
            buf = b""
    return records


def history(records: list) -> list[dict]:
    rows = []
    for record in records:
        if record.WhichOneof("record_type") == "history":
            rows.append({(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in record.history.item})
    return rows


# Processes: W&B keeps per-process state (its service, the active run) that two in-process runs
# share; history after the resume goes missing that way.
@pytest.mark.slow
def test_wandb_offline_logs_config_steps_evals_and_resumes_the_same_run(tmp_path: Path) -> None:
    config = write_config(
        tmp_path, '[wandb]\nproject = "tp-test"\nname = "mixture"\ntags = ["data", "nll"]\n',
        num_steps=10, save_every=5, eval_every=5,
    )
    (tmp_path / "crash.py").write_text(CRASH_AT_7)
    env = {"WANDB_MODE": "offline", "TINKER_API_KEY": FAKE_KEY, "WANDB_SILENT": "true"}
    crashed = run_cli("run", str(config), "--set", "backend=local", "-p", str(tmp_path / "crash.py"), env=env)
    assert crashed.returncode == 3 and "crash at step 7" in crashed.stderr
    run_dir = tmp_path / "run"
    state = json.loads((run_dir / "wandb.json").read_text())
    assert state["last_step"] == 6
    resumed = run_cli("run", str(config), "--set", "backend=local", "--resume", env=env)
    assert resumed.returncode == 0, resumed.stderr

    files = sorted((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(files) == 2 and all(f.name == f"run-{state['id']}.wandb" for f in files)  # one W&B run
    first, second = (wandb_records(f) for f in files)
    run_record = next(r.run for r in first if r.WhichOneof("record_type") == "run")
    assert (run_record.project, run_record.display_name, list(run_record.tags)) == ("tp-test", "mixture", ["data", "nll"])
    logged_config = {i.key: json.loads(i.value_json) for i in run_record.config.update}
    assert logged_config["lora_rank"] == 16 and logged_config["batch_size"] == 8

    rows = history(first) + history(second)
    steps = [r["_step"] for r in rows]
    assert steps == list(range(11))  # each step once: the resume skips 5 and 6, already logged
    assert all("train/loss" in r for r in rows[:10])
    evals = [r for r in rows if "eval/nll/loss" in r]
    assert [r["_step"] for r in evals] == [0, 5, 10]
    assert evals[-1]["eval/table/_type"] == "table-file" and evals[-1]["eval/nll/loss"] < evals[0]["eval/nll/loss"]
    tables = sorted(files[1].parent.glob("files/media/table/eval/table_*.table.json"))
    data = json.loads(tables[-1].read_text())
    assert [row[0] for row in data["data"]] == [0, 5, 10]  # the resumed table has the rows from before

    for path in run_dir.rglob("*"):
        if path.is_file():
            assert FAKE_KEY.encode() not in path.read_bytes(), path
