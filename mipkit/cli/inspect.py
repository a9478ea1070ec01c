"""``mipkit status`` and ``mipkit inspect``: read a build without changing it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from mipkit.core import ui


def status(
    out: Path = typer.Argument(..., help="A build's --out folder."),
    as_json: bool = typer.Option(False, "--json", help="Print {counts, failed, shards} as JSON."),
    limit: int = typer.Option(20, help="Failed samples to list in the table."),
) -> None:
    """Counts per status and the failed samples with their reasons."""
    from mipkit.pipeline.status import status_report

    report = status_report(out)
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return
    ui.stdout.print(
        ui.counts_table(
            f"{out.name}: samples by status (shards {report['shards']['done']}/{report['shards']['total']} done)",
            report["counts"],
            "requested",
        )
    )
    if report.get("skipped"):
        ui.stdout.print(ui.counts_table("skipped (counted, not listed)", report["skipped"], "skipped", key="reason"))
    if report["failed"]:
        ui.stdout.print(ui.failures_table(report["failed"], limit))


def inspect(
    out: Path = typer.Argument(..., help="A dataset folder written by mipkit build."),
    rows: int = typer.Option(5, help="Rows to show per split."),
) -> None:
    """Splits, counts per emotion and a few rows of a built dataset."""
    from mipkit.pipeline.overview import inspect_dataset

    inspect_dataset(out, rows)
