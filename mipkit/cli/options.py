"""What several command groups declare or check the same way: shared typer options (``Annotated`` aliases:
``workers: options.Workers = 1``), the ``--cookies`` check and the fetch flags of every media build."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from mipkit.config.recipe import check_cookies_file
from mipkit.core.errors import MipkitError
from mipkit.core.storage import Location, parse_storage_options

OUT_HELP = "Output folder or fsspec URL (s3://bucket/prefix, gs://..., file://...)"

BuildOut = Annotated[
    str,
    typer.Option(
        "--out", "-o", help=f"{OUT_HELP}: a datasets.load_from_disk DatasetDict plus build/ (shards, statuses)."
    ),
]
StorageOptions = Annotated[
    Optional[str],
    typer.Option(
        "--storage-options",
        help='JSON for the fsspec filesystem of an s3://, gs://... location, e.g. \'{"endpoint_url": "http://host:9000"}\' '
        "(also MIPKIT_STORAGE_OPTIONS; credentials otherwise come from the environment or ~/.aws). Never written anywhere.",
    ),
]
RayAddress = Annotated[
    Optional[str],
    typer.Option(
        "--ray-address", help="--engine ray: join the Ray cluster at this address (default: RAY_ADDRESS, else local)."
    ),
]
SharedFs = Annotated[
    bool,
    typer.Option(
        "--shared-fs", help="A local --out is on a file system every Ray node mounts (NFS, Lustre): allow it."
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
PolitenessFlags = Annotated[
    Optional[list[str]],
    typer.Option(
        "--politeness",
        help="Override one politeness value: HOST:key=value (repeatable), e.g. youtube.com:min_interval_s=10, "
        "default:max_per_hour=600. Keys: min_interval_s, jitter_s, max_per_hour, sleep_requests_s, "
        "backoff_initial_s, backoff_max_s, breaker_after.",
    ),
]
FetchStrategy = Annotated[
    Optional[str],
    typer.Option(
        "--fetch-strategy",
        help="How windows are read: sections (ranged reads), streams (the smallest streams whole, cut locally) "
        "or auto (sections, falling back to streams per host; recipe fetch.strategy).",
    ),
]
CookiesFromBrowser = Annotated[
    Optional[str],
    typer.Option(
        "--cookies-from-browser",
        help="Use this browser's cookies: BROWSER[:PROFILE] as in yt-dlp (never logged or written into the build).",
    ),
]


def check_cookies(cookies: Path | None) -> None:
    """``--cookies`` must name an existing Netscape cookies file (only its name is ever printed, never its values)."""
    if cookies is not None:
        check_cookies_file(cookies)


def location(value: str | Path, storage_options: str | None) -> Location:
    """A command's folder argument as a ``Location``, with its storage options."""
    return Location(str(value), parse_storage_options(storage_options))


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


def media_build_recipe(
    recipe: str,
    *,
    cookies: Path | None,
    proxy: str | None,
    sleep: float | None,
    seed: int | None,
    shard_size: int | None,
    fetch_threads: int | None,
    politeness: list[str] | None,
    cookies_from_browser: str | None,
    fetch_strategy: str | None = None,
    overrides: dict | None = None,
):
    """The recipe of a media build with the flags every such build shares, validated before any work
    (``--cookies`` first, so its check names only the file)."""
    from mipkit.config.recipe import load_recipe

    check_cookies(cookies)
    config = load_recipe(recipe).with_overrides(
        {
            **(overrides or {}),
            "shards.sources_per_shard": shard_size,
            "shards.fetch_threads": fetch_threads,
            "ytdlp.cookiefile": str(cookies) if cookies else None,
            "ytdlp.proxy": proxy,
            "ytdlp.sleep_interval": sleep,
            "splits.seed": seed,
            "fetch.strategy": fetch_strategy,
        }
    )
    return apply_fetch_flags(config, politeness, cookies_from_browser)
