"""What users see: rich progress bars on long work, summary tables, PNG charts."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

console = Console(stderr=True)  # progress and messages
stdout = Console()  # tables and reports


class RateColumn(ProgressColumn):
    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task) -> Text:
        # Completed over elapsed: shards report in bursts, which rich's short-window estimate
        # turns into absurd spikes.
        elapsed = task.finished_time if task.finished else task.elapsed
        speed = task.completed / elapsed if elapsed and task.completed else None
        return Text(f"{speed:.2f} {self.unit}/s" if speed else f"- {self.unit}/s", style="progress.data.speed")


def progress_bar(unit: str = "samples") -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        RateColumn(unit),
        TextColumn("[red]{task.fields[failed]} failed"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )


def counts_table(title: str, counts: dict[str, int], total_label: str = "total", key: str = "status") -> Table:
    table = Table(title=title)
    table.add_column(key)
    table.add_column("count", justify="right")
    for status, count in counts.items():
        style = {"ok": "green", "pending": "yellow"}.get(status, "red") if key == "status" else ""
        table.add_row(Text(status, style=style), str(count))
    table.add_row(Text(total_label, style="bold"), str(sum(counts.values())))
    return table


def failures_table(failed: list[dict], limit: int = 20) -> Table:
    table = Table(title=f"failed samples ({len(failed)}{', first ' + str(limit) if len(failed) > limit else ''})")
    for column in ("id", "status", "reason"):
        table.add_column(column, overflow="fold")
    for entry in failed[:limit]:
        table.add_row(entry.get("pair_id") or entry.get("url") or "?", entry["status"], entry.get("error", ""))
    return table


def bar_chart(
    path: Path, title: str, series: dict[str, dict[str, int]], xlabel: str = "", ylabel: str = "count"
) -> Path:
    """Grouped bar chart: ``series`` maps a group (e.g. split) to category counts."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    categories = sorted({c for counts in series.values() for c in counts}, key=str)
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(categories) + 2), 4))
    width = 0.8 / max(len(series), 1)
    for i, (group, counts) in enumerate(series.items()):
        ax.bar(np.arange(len(categories)) + i * width, [counts.get(c, 0) for c in categories], width, label=group)
    ax.set_xticks(np.arange(len(categories)) + width * (len(series) - 1) / 2, categories, rotation=30, ha="right")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if len(series) > 1:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
