"""What several command groups declare or check the same way: shared typer options (``Annotated`` aliases:
``workers: Workers = 1``) and the ``--cookies`` check."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mipkit.core.errors import MipkitError

BuildOut = Annotated[
    Path,
    typer.Option(
        "--out", "-o", help="Output folder: a datasets.load_from_disk DatasetDict plus build/ (shards, statuses)."
    ),
]
Workers = Annotated[int, typer.Option(min=1, help="Shards built in parallel (processes, or Ray tasks).")]
Engine = Annotated[str, typer.Option(help="local (process pool) or ray (RAY_ADDRESS joins a cluster).")]
Overwrite = Annotated[bool, typer.Option("--overwrite", help="Discard earlier work in --out and start again.")]
ShardSize = Annotated[Optional[int], typer.Option(min=1, help="Sources per shard.")]
FetchThreads = Annotated[Optional[int], typer.Option(min=1, help="Sources fetched concurrently inside a shard.")]
Cookies = Annotated[Optional[Path], typer.Option(help="Netscape cookies file for yt-dlp (never printed or published).")]
Proxy = Annotated[Optional[str], typer.Option(help="Proxy URL for yt-dlp (never printed or published).")]
Sleep = Annotated[
    Optional[float], typer.Option(help="Seconds to pause before each download (5-10 advised for YouTube).")
]
SplitSeed = Annotated[Optional[int], typer.Option(help="Seed of the split assignment.")]


def check_cookies(cookies: Path | None) -> None:
    """``--cookies`` must name an existing file (its path is never printed: only its name)."""
    if cookies is not None and not cookies.is_file():
        raise MipkitError(
            f"--cookies file {cookies.name!r} does not exist; export cookies in Netscape format and pass that file"
        )
