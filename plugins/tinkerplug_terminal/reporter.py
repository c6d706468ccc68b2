"""What the terminal shows while a run goes: notes, a progress bar, eval lines, the summary table."""

from __future__ import annotations

import math
from typing import Any, Mapping

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table


class Reporter:
    def __init__(self, console: Console | None = None, quiet: bool = False):
        # soft_wrap: never break a path or a command the user may copy into two lines
        self.console = console or Console(stderr=True, soft_wrap=True)
        self.quiet = quiet
        self._progress: Progress | None = None
        self._task: Any = None

    def note(self, text: str) -> None:
        if not self.quiet:
            self.console.print(f"[dim]tinkerplug:[/dim] {escape(text)}", highlight=False)

    def warn(self, text: str) -> None:
        self.console.print(f"[yellow]warning:[/yellow] {escape(text)}", highlight=False)

    def start_progress(self, total: int, start: int) -> None:
        self._progress = Progress(
            TextColumn("[bold]train"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=self.console,
            disable=self.quiet,
        )
        self._task = self._progress.add_task("train", total=total, completed=start, info="")
        self._progress.start()

    def stop_progress(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def step(self, row: Mapping[str, Any]) -> None:
        if self._progress is not None:
            self._progress.update(
                self._task,
                completed=row["step"] + 1,
                info=f"loss {row['train/loss']:.4f}  lr {row['lr']:.2e}",
            )

    def evals(self, step: int, metrics: dict[str, float]) -> None:
        if metrics and not self.quiet:
            shown = "  ".join(f"{k.removeprefix('eval/')}={v:.4g}" for k, v in sorted(metrics.items()))
            self.console.print(f"[cyan]eval @ step {step}:[/cyan] {shown}", highlight=False)

    def checkpoint(self, record: Any) -> None:
        self.note(f"checkpoint @ step {record.step}: {record.state_path}")

    def stopped(self, step: int, command: str) -> None:
        self.console.print(
            f"[yellow]stopped after step {step}; checkpoint saved.[/yellow] Resume with:\n  {escape(command)}",
            highlight=False,
        )

    def summary(self, summary: Mapping[str, Any]) -> None:
        table = Table(title="tinkerplug run summary", show_lines=False)
        table.add_column("metric")
        table.add_column("start", justify="right")
        table.add_column("end", justify="right")
        if "train/loss_first" in summary:
            table.add_row("train/loss (mean of first/last steps)", _fmt(summary["train/loss_first"]), _fmt(summary["train/loss_last"]))
        for key, values in summary.get("eval", {}).items():
            if key.startswith("eval/") and not key.endswith("/n"):
                table.add_row(
                    f"{key} (step {values['first_step']} → {values['last_step']})",
                    _fmt(values["first"]),
                    _fmt(values["last"]),
                )
        self.console.print(table)
        sps = summary.get("s_per_step")
        self.console.print(
            f"{summary['steps_run']} steps in {summary['elapsed_s']:.1f}s"
            + (f" ({sps:.3f} s/step)" if sps else "")
            + f"; run dir: {summary['run_dir']}",
            highlight=False,
        )


def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.4f}" if isinstance(value, float) else str(value)
