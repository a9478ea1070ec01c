"""What several command groups check the same way."""

from __future__ import annotations

from pathlib import Path

from mipkit.core.errors import MipkitError


def check_cookies(cookies: Path | None) -> None:
    """``--cookies`` must name an existing file (its path is never printed: only its name)."""
    if cookies is not None and not cookies.is_file():
        raise MipkitError(
            f"--cookies file {cookies.name!r} does not exist; export cookies in Netscape format and pass that file"
        )
