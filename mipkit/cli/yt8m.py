"""``mipkit build yt8m-title`` and ``mipkit build yt8m-keyword`` (registered by ``mipkit.cli.app``)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Optional

import typer

from mipkit.cli import options
from mipkit.cli.options import OUT_HELP, check_cookies, location
from mipkit.core import ui
from mipkit.core.errors import MipkitError


def load_yt8m_recipe(name_or_path: str):
    """``(Recipe, Yt8mConfig)``: the shared sections ([ytdlp], [splits]) and the ``[yt8m]`` one (defaults if absent)."""
    from mipkit.config.recipe import Yt8mConfig, load_recipe

    recipe = load_recipe(name_or_path)
    if recipe.yt8m is None:
        recipe = dataclasses.replace(recipe, yt8m=Yt8mConfig())
    return recipe, recipe.yt8m


def default_cache_dir() -> Path:
    """Shared by builds: downloaded TFRecords, id lookups, yt-dlp answers (``MIPKIT_CACHE`` overrides)."""
    return Path(os.environ.get("MIPKIT_CACHE", Path.home() / ".cache" / "mipkit")) / "yt8m"


def _build(
    kind: str,
    tfrecords: list[str],
    out: Path,
    recipe: Optional[str],
    vocabulary: Optional[Path],
    metadata: Optional[Path],
    fetch: bool,
    split_by: Optional[str],
    validate_as: Optional[str],
    seed: Optional[int],
    workers: int,
    engine: str,
    ray_address: Optional[str],
    shared_fs: bool,
    threads: Optional[int],
    lookup_base: Optional[str],
    lookup_rate: Optional[float],
    metadata_rate: Optional[float],
    video_url_template: Optional[str],
    cache_dir: Optional[Path],
    cookies: Optional[Path],
    proxy: Optional[str],
    overwrite: bool,
    retry_failed: bool,
) -> None:
    from mipkit.kinds.yt8m.build import ShardSettings, Yt8mOptions, build_yt8m
    from mipkit.kinds.yt8m.tfrecords import music_label_index

    check_cookies(cookies)
    if metadata is not None and not metadata.is_file():
        raise MipkitError(
            f"--metadata {metadata.name!r} does not exist; pass a JSONL with id, youtube_id, title, tags per line"
        )
    if not fetch and metadata is None:
        raise MipkitError("--no-fetch needs --metadata FILE.jsonl: without either there is no title or keyword to read")
    base, _ = load_yt8m_recipe(recipe or f"yt8m-{kind}")
    base = base.with_overrides(
        {
            "ytdlp.cookiefile": str(cookies) if cookies else None,
            "ytdlp.proxy": proxy,
            "splits.seed": seed,
            "yt8m.lookup_base": lookup_base,
            "yt8m.lookup_rate": lookup_rate,
            "yt8m.metadata_rate": metadata_rate,
            "yt8m.video_url_template": video_url_template,
            "yt8m.threads": threads,
            "yt8m.split_by": split_by,
            "yt8m.validate_as": validate_as,
        }
    )
    yt = base.yt8m
    template = yt.video_url_template
    try:
        usable = "{youtube_id}" in template and template.format(youtube_id="x") != template
    except (KeyError, IndexError, ValueError, AttributeError):
        usable = False
    if not usable:
        raise MipkitError("--video-url-template must contain {youtube_id} and no other {...} field")
    if vocabulary is None:
        ui.console.print(
            f"[yellow]note:[/yellow] no --vocabulary: using index {yt.music_label_index} for {yt.music_label!r} "
            "(2018 vocabulary); pass the release's vocabulary.csv to be sure"
        )
    settings = ShardSettings(
        kind=kind,
        music_index=music_label_index(vocabulary, yt.music_label, yt.music_kg_id, yt.music_label_index),
        cache_dir=str((cache_dir or default_cache_dir()).expanduser()),
        ytdlp=base.ytdlp,
        lookup_base=yt.lookup_base,
        lookup_rate=yt.lookup_rate,
        lookup_retries=yt.lookup_retries,
        lookup_timeout=yt.lookup_timeout,
        metadata_rate=yt.metadata_rate,
        video_url_template=template,
        metadata_file=str(metadata) if metadata else None,
        fetch=fetch,
        threads=yt.threads,
    )
    recipe_record = base.to_dict()
    for unused in ("clip", "taxonomy", "shards"):
        recipe_record.pop(unused, None)
    opts = Yt8mOptions(
        tfrecords=tfrecords,
        out=out,
        settings=settings,
        recipe=recipe_record,
        split_by=yt.split_by,
        validate_as=yt.validate_as,
        ratios=base.splits.ratios(),
        seed=base.splits.seed,
        workers=workers,
        engine=engine,
        ray_address=ray_address,
        shared_fs=shared_fs,
        overwrite=overwrite,
        retry_failed=retry_failed,
    )
    summary = build_yt8m(opts)
    print_summary(out, summary)


def print_summary(out: Path, summary: dict) -> None:
    ui.stdout.print(ui.counts_table("music videos by status", summary["counts"], "music videos"))
    skipped = summary.get("skipped", {}).get("not_music", 0)
    ui.stdout.print(f"skipped: {skipped} videos without the 'Music video' label (counted, not listed)")
    ui.stdout.print(ui.counts_table("videos by split", summary["splits"], "videos", key="split"))
    ui.stdout.print(
        f"dataset: {out}  (datasets.load_from_disk)  ·  statuses: mipkit status {out}  ·  "
        f"metadata to reuse: {out / 'build' / 'metadata.jsonl'} (--metadata)"
    )


def yt8m_command(kind: str, what: str):
    """The typer command of one subset (the two differ only in ``kind``)."""

    def command(
        tfrecords: list[str] = typer.Option(
            ...,
            "--tfrecords",
            "-t",
            help="Frame-level TFRecords: paths, folders, globs ('frame/train*.tfrecord') or http(s) URLs (downloaded to --cache-dir once). Repeatable.",
        ),
        out: str = typer.Option(
            ...,
            "--out",
            "-o",
            help=f"{OUT_HELP}: a datasets.load_from_disk DatasetDict plus build/ (shards, statuses, metadata.jsonl).",
        ),
        storage_options: options.StorageOptions = None,
        vocabulary: Optional[Path] = typer.Option(
            None,
            help="The release's vocabulary.csv: 'Music video' is looked up by name (without it: index 14 of the 2018 vocabulary).",
        ),
        metadata: Optional[Path] = typer.Option(
            None,
            help="JSONL with id, youtube_id, title, tags per video (e.g. an earlier build's build/metadata.jsonl): used instead of the network.",
        ),
        fetch: bool = typer.Option(
            True,
            "--fetch/--no-fetch",
            help="Look up ids and ask yt-dlp for videos --metadata lacks (--no-fetch: status no_metadata).",
        ),
        recipe: Optional[str] = typer.Option(
            None, help=f"Recipe name in recipes/ or a .toml path (default yt8m-{kind})."
        ),
        split_by: Optional[str] = typer.Option(
            None, help="partition (train* -> train, validate* -> --validate-as) or ratio (recipe [splits], by video)."
        ),
        validate_as: Optional[str] = typer.Option(
            None, help="Split of validate* files: test (default; the paper has train/test only) or validation."
        ),
        seed: Optional[int] = typer.Option(None, help="Seed of the ratio split."),
        workers: int = typer.Option(
            1, min=1, help="TFRecord files built in parallel (processes, or Ray tasks). Rate limits are shared out."
        ),
        engine: options.Engine = "local",
        ray_address: options.RayAddress = None,
        shared_fs: options.SharedFs = False,
        threads: Optional[int] = typer.Option(
            None, min=1, help="Videos resolved concurrently inside one file (recipe: 4)."
        ),
        lookup_base: Optional[str] = typer.Option(
            None, help="Base URL of the id lookup (recipe: http://data.yt8m.org/2/j/i)."
        ),
        lookup_rate: Optional[float] = typer.Option(None, help="Id lookups per second, whole build (recipe: 10)."),
        metadata_rate: Optional[float] = typer.Option(
            None, help="yt-dlp metadata requests per second, whole build (recipe: 1)."
        ),
        video_url_template: Optional[str] = typer.Option(
            None, help="URL yt-dlp reads for a video (recipe: https://www.youtube.com/watch?v={youtube_id})."
        ),
        cache_dir: Optional[Path] = typer.Option(
            None,
            help="Cache of downloaded TFRecords, id lookups and yt-dlp answers (default ~/.cache/mipkit/yt8m, or $MIPKIT_CACHE/yt8m).",
        ),
        cookies: options.Cookies = None,
        proxy: options.Proxy = None,
        overwrite: options.Overwrite = False,
        retry_failed: bool = typer.Option(
            False, "--retry-failed", help="Redo the files whose videos hit rate limits or network errors."
        ),
    ) -> None:
        _build(
            kind,
            tfrecords,
            location(out, storage_options),
            recipe,
            vocabulary,
            metadata,
            fetch,
            split_by,
            validate_as,
            seed,
            workers,
            engine,
            ray_address,
            shared_fs,
            threads,
            lookup_base,
            lookup_rate,
            metadata_rate,
            video_url_template,
            cache_dir,
            cookies,
            proxy,
            overwrite,
            retry_failed,
        )

    command.__doc__ = (
        f"YouTube-8M music videos with {what}, as an HF dataset (uint8 rgb/audio frames, title, keywords)."
    )
    return command
