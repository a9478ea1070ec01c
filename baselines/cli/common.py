"""What the training and evaluation commands share."""

from __future__ import annotations

import typer


def fail(error: Exception | str) -> None:
    """One line on stderr, exit code 2 (bad input)."""
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(code=2)
