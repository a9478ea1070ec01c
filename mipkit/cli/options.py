"""What several command groups check the same way, and the fetch flags every media build shares."""

from __future__ import annotations

from pathlib import Path

import typer

from mipkit.config.recipe import check_cookies_file
from mipkit.core.errors import MipkitError

POLITENESS_HELP = (
    "Override one politeness value: HOST:key=value (repeatable), e.g. youtube.com:min_interval_s=10, "
    "default:max_per_hour=600. Keys: min_interval_s, jitter_s, max_per_hour, sleep_requests_s, "
    "backoff_initial_s, backoff_max_s, breaker_after."
)
BROWSER_HELP = "Use this browser's cookies: BROWSER[:PROFILE] as in yt-dlp (never logged or written into the build)."


def check_cookies(cookies: Path | None) -> None:
    """``--cookies`` must name an existing Netscape cookies file (only its name is ever printed, never its values)."""
    if cookies is not None:
        check_cookies_file(cookies)


def politeness_option():
    return typer.Option(None, "--politeness", help=POLITENESS_HELP)


def cookies_from_browser_option():
    return typer.Option(None, "--cookies-from-browser", help=BROWSER_HELP)


def apply_fetch_flags(config, politeness: list[str] | None, cookies_from_browser: str | None):
    """The recipe with ``--politeness`` overrides and ``--cookies-from-browser`` applied (validated)."""
    settings = config.politeness
    for spec in politeness or []:
        settings = settings.with_override(spec)
    if cookies_from_browser is not None:
        from yt_dlp.cookies import SUPPORTED_BROWSERS

        browser = cookies_from_browser.partition(":")[0].strip().lower()
        if browser not in SUPPORTED_BROWSERS:
            raise MipkitError(
                f"--cookies-from-browser {browser!r} is not a browser yt-dlp reads; "
                f"choose one of {', '.join(sorted(SUPPORTED_BROWSERS))} (optionally BROWSER:PROFILE)"
            )
    return config.with_overrides({"politeness": settings, "ytdlp.cookies_from_browser": cookies_from_browser})
