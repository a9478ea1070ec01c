"""What several command groups check the same way."""

from __future__ import annotations

from pathlib import Path

from mipkit.config.recipe import check_cookies_file


def check_cookies(cookies: Path | None) -> None:
    """``--cookies`` must name an existing Netscape cookies file (only its name is ever printed, never its values)."""
    if cookies is not None:
        check_cookies_file(cookies)
