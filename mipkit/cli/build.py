"""``mipkit build mipnet`` and the build summary every build command prints."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mipkit.cli import options
from mipkit.cli.options import location
from mipkit.core import ui
from mipkit.core.storage import Location


def build_mipnet(
    manifest: Path = typer.Option(
        ...,
        "--manifest",
        "-m",
        help="CSV, JSONL or Parquet with a 'url' column (and optional start_s, emotion, title, license).",
    ),
    out: options.BuildOut = ...,
    storage_options: options.StorageOptions = None,
    ray_address: options.RayAddress = None,
    shared_fs: options.SharedFs = False,
    recipe: str = typer.Option("mipnet", help="Recipe name in recipes/ or a .toml path."),
    workers: options.Workers = 1,
    engine: options.Engine = "local",
    clips_per_source: Optional[int] = typer.Option(None, min=1, help="Evenly spaced windows for rows without start_s."),
    clip_seconds: Optional[float] = typer.Option(None, help="Clip length in seconds, up to 600 (recipe: 10)."),
    sample_rate: Optional[int] = typer.Option(None, help="Audio sample rate, 8000-192000 Hz (recipe: 32000)."),
    shard_size: options.ShardSize = None,
    fetch_threads: options.FetchThreads = None,
    format: Optional[str] = typer.Option(None, "--format", help="yt-dlp format selector."),
    cookies: options.Cookies = None,
    proxy: options.Proxy = None,
    sleep: options.Sleep = None,
    politeness: options.PolitenessFlags = None,
    cookies_from_browser: options.CookiesFromBrowser = None,
    fetch_strategy: options.FetchStrategy = None,
    seed: options.SplitSeed = None,
    overwrite: options.Overwrite = False,
    retry_failed: bool = typer.Option(
        False, "--retry-failed", help="Fetch again the shards whose samples were rate-limited or hit network errors."
    ),
    label_with: Optional[str] = typer.Option(
        None, "--label-with", help="After the build, label pairs without a manifest label with this model: passt."
    ),
    weights: Optional[Path] = typer.Option(None, "--weights", help="Local PaSST AudioSet checkpoint for --label-with."),
    threshold: float = typer.Option(0.5, help="--label-with: keep a mood only when its probability is at least this."),
) -> None:
    """Build MIPNet-style image-music pairs from public media."""
    from mipkit.kinds.pairs import BuildOptions, build

    # Configuration first: a bad value is a one-line error before any work.
    target = location(out, storage_options)
    config = options.media_build_recipe(
        recipe,
        cookies=cookies,
        proxy=proxy,
        sleep=sleep,
        seed=seed,
        shard_size=shard_size,
        fetch_threads=fetch_threads,
        politeness=politeness,
        cookies_from_browser=cookies_from_browser,
        fetch_strategy=fetch_strategy,
        overrides={
            "clip.clips_per_source": clips_per_source,
            "clip.seconds": clip_seconds,
            "clip.sample_rate": sample_rate,
            "ytdlp.format": format,
        },
    )
    labeller = None
    if label_with:
        from mipkit.labelling.passt import make_labeller

        labeller = make_labeller(label_with, weights)  # before the build: a bad --weights fails in seconds
    summary = build(
        BuildOptions(
            manifest=manifest,
            out=target,
            recipe=config,
            workers=workers,
            engine=engine,
            overwrite=overwrite,
            retry_failed=retry_failed,
            ray_address=ray_address,
            shared_fs=shared_fs,
        )
    )
    print_build_summary(target, summary)
    if labeller is not None:
        from mipkit.cli.label import print_labelling_summary
        from mipkit.labelling.passt import label_dataset

        print_labelling_summary(label_dataset(target.local_path, labeller, threshold=threshold))


def print_build_summary(out: Location, summary: dict) -> None:
    ui.stdout.print(ui.counts_table("samples by status", summary["counts"], "requested"))
    ui.stdout.print(ui.counts_table("pairs by split", summary["splits"], "pairs", key="split"))
    ui.stdout.print(
        f"dataset: {out}  (datasets.load_from_disk)  ·  statuses: mipkit status {out}  ·  chart: {out / 'label_distribution.png'}"
    )
