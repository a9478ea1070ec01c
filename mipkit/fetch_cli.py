"""``mipkit doctor``, and the fetch flags every media build shares (``--politeness``, ``--cookies-from-browser``)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table
from rich.text import Text

from mipkit import ui

POLITENESS_HELP = ("Override one politeness value: HOST:key=value (repeatable), e.g. youtube.com:min_interval_s=10, "
                   "default:max_per_hour=600. Keys: min_interval_s, jitter_s, max_per_hour, sleep_requests_s, "
                   "backoff_initial_s, backoff_max_s, breaker_after.")
BROWSER_HELP = "Use this browser's cookies: BROWSER[:PROFILE] as in yt-dlp (never logged or written into the build)."


def politeness_option():
    return typer.Option(None, "--politeness", help=POLITENESS_HELP)


def cookies_from_browser_option():
    return typer.Option(None, "--cookies-from-browser", help=BROWSER_HELP)


def apply_fetch_flags(config, politeness: list[str] | None, cookies_from_browser: str | None):
    """The recipe with ``--politeness`` overrides and ``--cookies-from-browser`` applied (validated)."""
    from mipkit.errors import MipkitError

    settings = config.politeness
    for spec in politeness or []:
        settings = settings.with_override(spec)
    if cookies_from_browser is not None:
        from yt_dlp.cookies import SUPPORTED_BROWSERS

        browser = cookies_from_browser.partition(":")[0].strip().lower()
        if browser not in SUPPORTED_BROWSERS:
            raise MipkitError(f"--cookies-from-browser {browser!r} is not a browser yt-dlp reads; "
                              f"choose one of {', '.join(sorted(SUPPORTED_BROWSERS))} (optionally BROWSER:PROFILE)")
    return config.with_overrides({"politeness": settings, "ytdlp.cookies_from_browser": cookies_from_browser})


def checks_table(checks) -> Table:
    from mipkit.doctor import MISSING, OK, WARNING

    table = Table(title="what a build needs")
    for column in ("part", "state", "version", "fix"):
        table.add_column(column, overflow="fold")
    styles = {OK: "green", WARNING: "yellow", MISSING: "red"}
    for check in checks:
        state = check.state if check.required or check.state == OK else f"{check.state} (optional)"
        table.add_row(Text(check.part), Text(state, style=styles.get(check.state, "")), Text(check.version), Text(check.fix))
    return table


def doctor(
    cookies: Path | None = typer.Option(None, help="A Netscape cookies file to check (only counts are shown)."),
    proxy: str | None = typer.Option(None, help="A proxy URL to check for reachability (never printed)."),
    cookies_from_browser: str | None = cookies_from_browser_option(),
) -> None:
    """Check ffmpeg, yt-dlp, the JavaScript runtime, plugins, cookies and proxy; exit 1 when a required part is missing."""
    from mipkit.doctor import run_checks

    checks = run_checks(cookies, proxy, cookies_from_browser)
    ui.stdout.print(checks_table(checks))
    failed = [c.part for c in checks if c.failed]
    if failed:
        ui.console.print(f"[red]missing:[/red] {', '.join(failed)}; see the fix column", soft_wrap=True)
        raise typer.Exit(1)
    ui.console.print("[green]ready:[/green] every required part is there", soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("doctor")(doctor)
