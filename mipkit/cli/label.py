"""Commands ``mipkit label`` and ``mipkit build audioset-mood`` (registered by ``mipkit.cli.app``)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from mipkit.cli import options
from mipkit.cli.options import location
from mipkit.core import ui


def print_labelling_summary(summary: dict) -> None:
    from mipkit.labelling.passt import distribution_table

    ui.stdout.print(distribution_table(summary))
    counts = summary["counts"]
    parts = [
        f"{counts.get(k, 0)} {k}"
        for k in ("labelled", "unlabelled", "protected", "undecodable", "dropped")
        if counts.get(k)
    ]
    ui.stdout.print(
        f"{', '.join(parts) or 'nothing to label'}  ·  emotion_source {summary['emotion_source']}  ·  chart: {summary['chart']}"
    )


def label(
    dataset_dir: Path = typer.Argument(
        ..., help="A dataset folder written by mipkit build (relabelled in place unless --out)."
    ),
    music_model: str = typer.Option(
        "passt", help="Labeller: passt (PaSST's AudioSet head, the seven music-mood logits)."
    ),
    weights: Optional[Path] = typer.Option(
        None, help="Local PaSST AudioSet checkpoint (torch state dict); its sha256 goes into emotion_source."
    ),
    threshold: float = typer.Option(
        0.5, help="Keep the top mood when its probability (softmax over the seven) is at least this; else unlabelled."
    ),
    drop: bool = typer.Option(
        False, "--drop", help="Drop pairs left unlabelled instead of keeping them with an empty label."
    ),
    out: Optional[Path] = typer.Option(
        None, "--out", "-o", help="Write the labelled dataset to this new folder instead of replacing DATASET_DIR."
    ),
    batch_size: int = typer.Option(16, min=1, help="Clips per forward pass."),
    device: str = typer.Option("auto", help="auto (CUDA when present, bf16 autocast), cpu, cuda or cuda:N."),
    preset: str = typer.Option("full", help="full (PaSST-S) or tiny (a small random model for tests only)."),
    allow_random_weights: bool = typer.Option(
        False, "--allow-random-weights", help="Allow --preset tiny or no --weights (labels are noise: tests only)."
    ),
    seed: int = typer.Option(0, help="Seed of a randomly initialised model."),
) -> None:
    """Label every pair whose label did not come with the manifest, with a music-emotion model."""
    from mipkit.labelling.passt import label_dataset, make_labeller

    labeller = make_labeller(
        music_model,
        weights,
        preset=preset,
        allow_random_weights=allow_random_weights,
        device=device,
        batch_size=batch_size,
        seed=seed,
    )
    print_labelling_summary(label_dataset(dataset_dir, labeller, threshold=threshold, drop=drop, out=out))


def build_audioset_mood(
    segments: list[str] = typer.Option(
        ..., "--segments", "-s", help="AudioSet segment CSV, local file or http(s) URL (repeat for several)."
    ),
    out: options.BuildOut = ...,
    storage_options: options.StorageOptions = None,
    ray_address: options.RayAddress = None,
    shared_fs: options.SharedFs = False,
    labels: Optional[Path] = typer.Option(
        None, help="AudioSet class_labels_indices.csv (index,mid,display_name); default: the seven shipped mood rows."
    ),
    keep_multi_mood: bool = typer.Option(
        False, "--keep-multi-mood", help="Keep segments with several moods, labelled with their first."
    ),
    url_template: str = typer.Option(
        "https://www.youtube.com/watch?v={id}", help="Where a YTID is fetched from; {id} is replaced (for mirrors)."
    ),
    recipe: str = typer.Option("audioset-mood", help="Recipe name in recipes/ or a .toml path."),
    workers: options.Workers = 1,
    engine: options.Engine = "local",
    shard_size: options.ShardSize = None,
    fetch_threads: options.FetchThreads = None,
    cookies: options.Cookies = None,
    proxy: options.Proxy = None,
    sleep: options.Sleep = None,
    politeness: options.PolitenessFlags = None,
    cookies_from_browser: options.CookiesFromBrowser = None,
    fetch_strategy: options.FetchStrategy = None,
    seed: options.SplitSeed = None,
    overwrite: options.Overwrite = False,
) -> None:
    """Build AudioSet music-mood clips (one mood per segment) with their AudioSet labels."""
    from mipkit.cli.build import print_build_summary
    from mipkit.config.taxonomy import load_taxonomy
    from mipkit.core.ownership import writing
    from mipkit.kinds.audioset_mood import (
        SELECTION_FILE,
        default_labels_file,
        fetch_csv,
        read_class_labels,
        select_segments,
        write_selection,
    )
    from mipkit.kinds.pairs import BuildOptions, build

    out = location(out, storage_options)
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
    )
    files = [fetch_csv(spec) for spec in segments]
    selection = select_segments(
        files,
        read_class_labels(labels or default_labels_file()),
        load_taxonomy(config.taxonomy),
        keep_multi_mood=keep_multi_mood,
        url_template=url_template,
    )
    counts = selection.counts
    ui.console.print(
        f"{counts['rows']} segments read: {counts['kept'] + counts['multi_mood_kept']} with a mood requested, "
        f"{counts['multi_mood_skipped']} with several moods skipped (--keep-multi-mood keeps them), {counts['no_mood']} without a mood, "
        f"{counts['bad_row']} bad rows, {counts['duplicate']} duplicates"
    )
    # The kept list (not the URLs: a mirror may change between runs) identifies the build for resume.
    with writing(out):  # the same lock and claim as the build it runs
        selected = write_selection(out / SELECTION_FILE, selection)
        summary = build(
            BuildOptions(
                out=out,
                recipe=config,
                reader=lambda taxonomy: (selection.sources, selection.problems),
                inputs=[*files, selected],
                kind="audioset-mood",
                workers=workers,
                engine=engine,
                overwrite=overwrite,
                ray_address=ray_address,
                shared_fs=shared_fs,
            )
        )
    print_build_summary(out, summary)
