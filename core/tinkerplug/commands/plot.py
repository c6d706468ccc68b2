"""``tinkerplug plot RUN_DIR``: ``RUN_DIR/curves.png`` with the train loss, the learning rate and
every eval metric over steps, checkpoints marked. Needs matplotlib (``pip install
'tinkerplug[plot]'``), imported only here."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import click

from tinkerplug.errors import TinkerplugError

CURVES_PNG = "curves.png"


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError:
        raise TinkerplugError(
            "`tinkerplug plot` needs matplotlib, which is not installed",
            hint="pip install 'tinkerplug[plot]'  (or: pip install matplotlib)",
        ) from None
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt

    return plt


def _series(rows: list[dict[str, Any]], key: str) -> tuple[list[int], list[float]]:
    points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
    return [p[0] for p in points], [p[1] for p in points]


# The training curves an objective logs (rl, dpo, distill), beside train/loss, when present.
OBJECTIVE_CURVES = ("rl/reward", "rl/zero_variance_groups", "rl/sampler_learner_kl", "rl/kl_reference",
                    "dpo/accuracy", "dpo/margin", "distill/teacher_kl")


def objective_keys(steps: list[dict[str, Any]]) -> list[str]:
    """The objective curves in the run's step rows: the keys above and each reward's mean."""
    present = {k for r in steps for k in r}
    rewards = sorted(k for k in present if k.startswith("rl/reward/") and not k.endswith("_std"))
    return [k for k in OBJECTIVE_CURVES if k in present] + rewards


def _is_loss(key: str) -> bool:
    """Losses fall over orders of magnitude: a log axis keeps the late steps visible."""
    return key.endswith(("loss", "/bpb"))


def _is_constant(info: Any, key: str) -> bool:
    """An eval series with one value throughout (token counts, a format rate stuck at 1) says
    nothing as a curve; it is listed as skipped instead."""
    _, values = _series(info.metrics, key)
    return len(values) > 1 and len(set(values)) == 1


def plot_panels(info: Any) -> tuple[list[str], list[str]]:
    """The metrics drawn, and the constant eval series left out."""
    eval_keys = [k for k in info.eval_keys() if not k.endswith("/n")]  # sample counts are not curves
    constant = [k for k in eval_keys if _is_constant(info, k)]
    return ["train/loss", "lr", *objective_keys(info.steps), *(k for k in eval_keys if k not in constant)], constant


def plot_run(info: Any, out: Path) -> list[str]:
    """Draw the run's curves into ``out``; return the panel titles."""
    plt = _pyplot()
    panels, _ = plot_panels(info)
    cols = 2 if len(panels) > 1 else 1
    nrows = math.ceil(len(panels) / cols)
    # constrained layout keeps each panel's title clear of its neighbours and of the figure title
    fig, axes = plt.subplots(nrows, cols, figsize=(6.4 * cols, 3.2 * nrows), squeeze=False, sharex=True, layout="constrained")
    checkpoints = [c["step"] for c in info.checkpoints]
    last_step = max([info.steps_done, *checkpoints, *(r["step"] for r in info.metrics)], default=1)
    for ax, key in zip(axes.flat, panels):
        steps, values = _series(info.metrics if key.startswith("eval/") else info.steps, key)
        if key != "lr" and not key.startswith("eval/") and len(values) > 20:  # noisy per step: smoothed too
            ax.plot(steps, values, color="tab:blue", alpha=0.3, linewidth=1, label="per step")
            window = max(2, len(values) // 20)
            smooth = [sum(values[max(0, i - window + 1): i + 1]) / len(values[max(0, i - window + 1): i + 1]) for i in range(len(values))]
            ax.plot(steps, smooth, color="tab:blue", linewidth=2, label=f"mean of {window}")
            ax.legend(loc="upper right", fontsize=8)
        elif key.startswith("eval/"):
            ax.plot(steps, values, marker="o", color="tab:green")
            if values and all(0 <= v <= 1 for v in values):  # rates and accuracies: the whole scale
                ax.set_ylim(-0.05, 1.1)
            for x, y in zip(steps, values):
                ax.annotate(f"{y:.3g}", (x, y), textcoords="offset points", xytext=(0, 6), ha="center", fontsize=7)
        else:
            ax.plot(steps, values, color="tab:blue" if key == "train/loss" else "tab:orange")
        for i, step in enumerate(checkpoints):
            ax.axvline(step, color="grey", linestyle="--", linewidth=0.8, label="checkpoint" if i == 0 and key == "lr" else None)
        if key == "lr" and checkpoints:
            ax.legend(loc="upper right", fontsize=8)
        ax.set_title(key.removeprefix("eval/") + (" (eval)" if key.startswith("eval/") else ""), fontsize=10)
        ax.set_xlim(-0.02 * last_step, last_step * 1.02 + 0.5)
        ax.grid(True, alpha=0.3)
        if key == "lr":
            ax.ticklabel_format(axis="y", style="sci", scilimits=(-2, 3))
        if _is_loss(key) and values and min(values) > 0:
            ax.set_yscale("log")
            ax.set_title(ax.get_title() + ", log scale", fontsize=10)
        if not values:
            ax.text(0.5, 0.5, "no data yet", transform=ax.transAxes, ha="center", va="center", color="grey")
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    for ax in axes[-1]:
        ax.set_xlabel("step")
        ax.xaxis.set_tick_params(labelbottom=True)
    model = info.config.get("base_model", "?")
    fig.suptitle(f"{info.path.name}  ({model}, {info.steps_done}/{info.total_steps} steps)", fontsize=11)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return panels


@click.command("plot")
@click.argument("run_dir", type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None, help=f"Image to write (default: RUN_DIR/{CURVES_PNG}).")
def plot(run_dir: Path, out: Path | None) -> None:
    """Plot loss, learning rate and eval metrics of RUN_DIR over steps, checkpoints marked."""
    from tinkerplug.run_info import read_run

    info = read_run(run_dir)
    if not info.metrics:
        raise TinkerplugError(f"{run_dir} has no metrics yet (metrics.jsonl is empty or missing)")
    target = out or info.path / CURVES_PNG
    panels = plot_run(info, target)
    _, constant = plot_panels(info)
    click.echo(f"wrote {target} ({len(panels)} panels: {', '.join(panels)})")
    if constant:
        click.echo(f"not drawn, constant throughout: {', '.join(constant)}")
