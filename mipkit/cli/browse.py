"""Command ``mipkit browse`` (registered by ``mipkit.cli``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer


def browse(
    dataset_dir: Path = typer.Argument(..., help="A dataset folder written by mipkit build."),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="Folder of the site (default: DATASET_DIR/site)."),
    per_page: int = typer.Option(48, "--per-page", min=1, help="Pairs per gallery page."),
) -> None:
    """Write a static site of a built dataset (galleries with images and players, counts, failures) that opens from file://."""
    from mipkit.release.browse import build_site, print_site_summary

    print_site_summary(dataset_dir, build_site(dataset_dir, out, per_page))
