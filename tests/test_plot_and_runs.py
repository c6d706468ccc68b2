"""``tinkerplug plot``, ``runs`` and ``show`` on a short real run with evals and checkpoints."""

from __future__ import annotations

import json
import os
import shutil
import struct
import sys
from pathlib import Path

import pytest

from conftest import read_jsonl, run_cli, run_inprocess


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory: pytest.TempPathFactory, short_run: Path) -> Path:
    """``runs/first``: a copy of the session's short run (plot writes into it, runs adds dirs)."""
    directory = tmp_path_factory.mktemp("runs")
    shutil.copytree(short_run, directory / "runs" / "first")
    return directory / "runs"


def test_plot_writes_curves_with_every_eval_metric(runs_dir):
    run = runs_dir / "first"
    result = run_inprocess("plot", str(run))
    assert result.returncode == 0, result.stderr
    png = run / "curves.png"
    header = png.read_bytes()[:24]
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = struct.unpack(">II", header[16:24])
    assert width >= 1000 and height >= 600
    logged = {k for row in read_jsonl(run / "metrics.jsonl") for k in row if k.startswith("eval/") and not k.endswith("/n")}
    assert logged, "the run logged no eval metric"
    for key in ["train/loss", "lr", *logged]:
        assert key in result.stdout  # one panel per metric


def test_plot_without_matplotlib_says_what_to_install(runs_dir, tmp_path):
    # A real interpreter in which `import matplotlib` fails, as when the extra is not installed.
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['matplotlib'] = None\n")
    # a process: the stand-in package on PYTHONPATH must shadow an installed matplotlib
    result = run_cli("plot", str(runs_dir / "first"), "--out", str(tmp_path / "c.png"), env={"PYTHONPATH": str(tmp_path)})
    assert result.returncode != 0
    assert "needs matplotlib" in result.stderr and "tinkerplug[plot]" in result.stderr
    assert "Traceback" not in result.stderr and not (tmp_path / "c.png").exists()


def test_runs_lists_steps_loss_eval_and_checkpoint(runs_dir, tmp_path):
    (runs_dir / "empty-dir").mkdir(exist_ok=True)  # not a run: not listed
    (runs_dir / "merged").mkdir(exist_ok=True)  # an HF model dir (export --merge): not a run either
    (runs_dir / "merged" / "config.json").write_text('{"model_type": "qwen3", "hidden_size": 128}')
    result = run_inprocess("runs", str(runs_dir), "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert [r["run"] for r in rows] == ["first"]
    row = rows[0]
    metrics = read_jsonl(runs_dir / "first" / "metrics.jsonl")
    last_train = [m for m in metrics if "train/loss" in m][-1]
    assert (row["steps_done"], row["total_steps"]) == (6, "6")
    assert row["last_loss"] == pytest.approx(last_train["train/loss"])
    assert row["last_eval_step"] == 6 and "eval/heldout/exact_match" in row["last_eval"]
    assert row["last_checkpoint_step"] == 6

    table = run_inprocess("runs", str(runs_dir))
    assert table.returncode == 0 and "first" in table.stdout and "6/6" in table.stdout
    default = run_inprocess("runs", cwd=runs_dir.parent)  # ./runs by default
    assert default.returncode == 0 and "first" in default.stdout
    nothing = run_inprocess("runs", str(tmp_path))
    assert nothing.returncode == 0 and "no runs under" in nothing.stdout


def test_runs_piped_keeps_every_column_whole_and_a_terminal_wraps(runs_dir, tmp_path, monkeypatch):
    """Piped (no terminal) nothing is cut at 80 columns; in a narrow terminal cells wrap, and
    every character of a long run name is still there."""
    from rich.console import Console

    from tinkerplug.commands import runs as runs_mod

    long_name = "a-run-with-a-name-far-longer-than-any-column-" + "x" * 40
    shutil.copytree(runs_dir / "first", tmp_path / long_name)
    piped = run_cli("runs", str(tmp_path))
    assert piped.returncode == 0 and long_name in piped.stdout and "…" not in piped.stdout
    narrow = Console(width=60, record=True, file=open(os.devnull, "w"))
    monkeypatch.setattr(runs_mod, "_console", lambda: narrow)
    runs_mod.runs.callback(tmp_path, False)
    text = narrow.export_text()
    assert max(len(line) for line in text.splitlines()) <= 60 and "…" not in text
    first_column = "".join(line.split("│")[1].strip() for line in text.splitlines() if line.startswith("│"))
    assert long_name in first_column


def test_plot_draws_losses_on_a_log_axis_skips_constant_series_and_keeps_titles_apart(runs_dir, tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from tinkerplug.commands import plot as plot_mod
    from tinkerplug.commands.runs import read_run

    figures = []
    monkeypatch.setattr(plt, "close", figures.append)  # keep the figure to inspect it
    info = read_run(runs_dir / "first")
    panels = plot_mod.plot_run(info, tmp_path / "curves.png")
    axes = {ax.get_title(): ax for ax in figures[0].axes if ax.get_visible()}
    scales = {title.split(" (")[0].split(",")[0]: ax.get_yscale() for title, ax in axes.items()}
    assert scales["train/loss"] == "log" and scales["nll/loss"] == "log" and scales["lr"] == "linear"
    constant = [k for k in info.eval_keys() if len({r[k] for r in info.metrics if k in r}) == 1]
    assert "eval/nll/tokens" in constant and not set(constant) & set(panels)
    figures[0].canvas.draw()
    boxes = [ax.title.get_window_extent() for ax in axes.values()] + [figures[0]._suptitle.get_window_extent()]
    overlaps = [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:] if a.overlaps(b)]
    assert not overlaps, "panel titles overlap"


def test_show_prints_config_last_metrics_and_checkpoints(runs_dir, tmp_path):
    run = runs_dir / "first"
    result = run_inprocess("show", str(run))
    assert result.returncode == 0, result.stderr
    for text in ("base_model = tiny-chat", "batch_size = 8", "steps: 6/6", "last step (5):", "train/loss =",
                 "last eval (step 6):", "heldout/exact_match =", "checkpoints (2):", "step 3:", "(final)"):
        assert text in result.stdout, text
    data = json.loads(run_inprocess("show", str(run), "--json").stdout)
    assert [c["step"] for c in data["checkpoints"]] == [3, 6]
    assert data["config"]["num_steps"] == 6 and data["last_step"]["step"] == 5

    missing = run_inprocess("show", str(tmp_path / "nope"))
    assert missing.returncode != 0 and "is not a run directory" in missing.stderr
    assert "Traceback" not in missing.stderr


def test_commands_start_without_heavy_imports():
    """`runs`, `show`, `plot` and `export` are registered without importing torch & co."""
    code = (
        "import sys; from tinkerplug.cli import cli; "
        "assert {'export', 'plot', 'runs', 'show'} <= set(cli.commands); "
        "heavy = {'torch', 'transformers', 'peft', 'tinker', 'matplotlib'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    import subprocess

    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
