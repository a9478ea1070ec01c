"""``mipkit doctor``: one table of what a build needs (the checks live in ``mipkit.media.checks``)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from mipkit.cli import options
from mipkit.core import ui


def checks_table(checks) -> Table:
    from mipkit.media.checks import MISSING, OK, WARNING

    table = Table(title="what a build needs")
    for column in ("part", "state", "version", "fix"):
        table.add_column(column, overflow="fold")
    styles = {OK: "green", WARNING: "yellow", MISSING: "red"}
    for check in checks:
        state = check.state if check.required or check.state == OK else f"{check.state} (optional)"
        table.add_row(
            Text(check.part), Text(state, style=styles.get(check.state, "")), Text(check.version), Text(check.fix)
        )
    return table


def doctor(
    cookies: Path | None = typer.Option(None, help="A Netscape cookies file to check (only counts are shown)."),
    proxy: str | None = typer.Option(None, help="A proxy URL to check for reachability (never printed)."),
    cookies_from_browser: options.CookiesFromBrowser = None,
) -> None:
    """Check ffmpeg, yt-dlp, the JavaScript runtime, plugins, cookies and proxy; exit 1 when a required part is missing."""
    from mipkit.media.checks import run_checks

    checks = run_checks(cookies, proxy, cookies_from_browser)
    ui.stdout.print(checks_table(checks))
    failed = [c.part for c in checks if c.failed]
    if failed:
        ui.console.print(f"[red]missing:[/red] {', '.join(failed)}; see the fix column", soft_wrap=True)
        raise typer.Exit(1)
    ui.console.print("[green]ready:[/green] every required part is there", soft_wrap=True)
