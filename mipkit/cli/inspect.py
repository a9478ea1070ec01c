"""``mipkit status`` and ``mipkit inspect``: read a build without changing it."""

from __future__ import annotations

import json
import sys

import typer

from mipkit.cli import options
from mipkit.cli.options import location
from mipkit.core import ui


def status(
    out: str = typer.Argument(..., help="A build's --out folder or URL (s3://bucket/run, ...)."),
    as_json: bool = typer.Option(False, "--json", help="Print {counts, failed, shards} as JSON."),
    limit: int = typer.Option(20, help="Failed samples to list in the table."),
    storage_options: options.StorageOptions = None,
) -> None:
    """Counts per status and the failed samples with their reasons."""
    from mipkit.pipeline.status import status_report

    where = location(out, storage_options)
    report = status_report(where)
    if as_json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
        return
    ui.stdout.print(
        ui.counts_table(
            f"{where.display}: samples by status (shards {report['shards']['done']}/{report['shards']['total']} done)",
            report["counts"],
            "requested",
        )
    )
    if report.get("skipped"):
        ui.stdout.print(ui.counts_table("skipped (counted, not listed)", report["skipped"], "skipped", key="reason"))
    if report["failed"]:
        ui.stdout.print(ui.failures_table(report["failed"], limit))


def inspect(
    out: str = typer.Argument(..., help="A dataset folder (or URL) written by mipkit build."),
    rows: int = typer.Option(5, help="Rows to show per split."),
    storage_options: options.StorageOptions = None,
) -> None:
    """Splits, counts per emotion and a few rows of a built dataset."""
    from mipkit.pipeline.overview import inspect_dataset

    inspect_dataset(location(out, storage_options), rows)
