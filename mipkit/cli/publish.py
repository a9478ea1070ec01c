"""``mipkit push-to-hub`` and ``mipkit hydrate``: publish a build, rebuild a metadata-only release."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.table import Table

from mipkit.cli import options
from mipkit.cli.options import location
from mipkit.core import ui


def _human(size: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return str(size)


def written_table(title: str, written) -> Table:
    table = Table(title=title)
    table.add_column("file", overflow="fold")
    table.add_column("rows", justify="right")
    table.add_column("size", justify="right")
    for item in written:
        table.add_row(item.path, "" if item.rows is None else str(item.rows), _human(item.size))
    table.add_row("[bold]total[/bold]", str(sum(i.rows or 0 for i in written)), _human(sum(i.size for i in written)))
    return table


def push_to_hub_command(
    dataset_dir: str = typer.Argument(
        ..., metavar="DIR", help="A finished build: the --out folder (or URL, s3://...) of `mipkit build`."
    ),
    repo_id: str = typer.Argument(
        ..., metavar="REPO_ID", help="Hub dataset id, 'owner/name' (also used in the card's usage example)."
    ),
    private: bool = typer.Option(
        False, "--private", help="Make the dataset private (created private, or switched to private if it exists)."
    ),
    revision: Optional[str] = typer.Option(
        None, "--revision", help="Branch to push to (created from main if missing); default main."
    ),
    max_shard_size: str = typer.Option(
        "500MB", "--max-shard-size", help="Largest Parquet shard before compression, e.g. 500MB or 1GB."
    ),
    metadata_only: bool = typer.Option(
        False,
        "--metadata-only",
        help="Publish ids, clip times, labels and provenance without images or audio (rebuild with `mipkit hydrate`).",
    ),
    to_folder: Optional[str] = typer.Option(
        None,
        "--to-folder",
        help="Write exactly what would be pushed (README.md, label_distribution.png, data/*.parquet) to this folder or fsspec URL (s3://...) instead (an earlier release there is replaced); no login needed.",
    ),
    storage_options: options.StorageOptions = None,
) -> None:
    """Publish a built dataset to the Hugging Face Hub as Parquet shards with a complete dataset card.

    The token comes from `hf auth login` or HF_TOKEN and is never printed. Check a release first with
    --to-folder OUT, then `datasets.load_dataset("OUT")`.
    """
    from mipkit.release.publish import export_to_folder, push_to_hub

    source = location(dataset_dir, storage_options)
    if to_folder is not None:
        target = location(to_folder, storage_options)  # the same --storage-options for both ends
        written = export_to_folder(source, target, repo_id, metadata_only=metadata_only, max_shard_size=max_shard_size)
        ui.stdout.print(written_table(f"release written to {target}", written))
        # datasets takes no store URL as a dataset folder, but reads data files on one (endpoint and keys
        # from the environment, or its storage_options=): name each split's files.
        splits = dict.fromkeys(i.path.split("/")[-1].rsplit("-", 3)[0] for i in written if i.path.startswith("data/"))
        check = (
            f"datasets.load_dataset('{target}')"
            if target.is_local
            else "datasets.load_dataset('parquet', data_files={"
            + ", ".join(f"'{s}': '{target}/data/{s}-*.parquet'" for s in splits)
            + "})"
        )
        ui.stdout.print(f'check it: python -c "import datasets; print({check})"', soft_wrap=True)
        ui.stdout.print(
            f"publish it: mipkit push-to-hub {dataset_dir} {repo_id}{' --metadata-only' if metadata_only else ''}",
            soft_wrap=True,
        )
        return
    url, written = push_to_hub(
        source,
        repo_id,
        private=private,
        revision=revision,
        metadata_only=metadata_only,
        max_shard_size=max_shard_size,
    )
    ui.stdout.print(written_table(f"pushed to {repo_id}", written))
    ui.stdout.print(f"dataset: {url}", soft_wrap=True)


def hydrate_command(
    release: str = typer.Argument(
        ...,
        metavar="REPO_ID_OR_DIR",
        help="A metadata-only release: Hub id 'owner/name', or a folder or store URL written by `push-to-hub --to-folder`.",
    ),
    out: options.BuildOut = ...,
    recipe: str = typer.Option(
        "mipnet", help="Recipe name in recipes/ or a .toml path (clip length is taken from the release)."
    ),
    hydrate_storage_options: options.StorageOptions = None,
    workers: options.Workers = 1,
    engine: options.Engine = "local",
    ray_address: options.RayAddress = None,
    shared_fs: options.SharedFs = False,
    overwrite: options.Overwrite = False,
    keep_shard_media: options.KeepShardMedia = False,
) -> None:
    """Rebuild the images and audio of a metadata-only release through the normal build pipeline.

    Every rebuilt pair keeps its pair_id; pairs whose source is gone get a status (see `mipkit status OUT`). Run the same command again to resume.
    """
    from mipkit.cli.build import print_build_summary
    from mipkit.config.recipe import load_recipe
    from mipkit.release.hydrate import hydrate

    out = location(out, hydrate_storage_options)
    summary, comparison = hydrate(
        release,
        out,
        load_recipe(recipe),
        workers=workers,
        engine=engine,
        overwrite=overwrite,
        keep_shard_media=keep_shard_media,
        ray_address=ray_address,
        shared_fs=shared_fs,
    )
    print_build_summary(out, summary)
    table = Table(title=f"{Path(release).name if Path(release).exists() else release}: pairs of the release")
    table.add_column("")
    table.add_column("pairs", justify="right")
    for label, key in (
        ("in the release", "release_pairs"),
        ("rebuilt", "rebuilt"),
        ("missing (see mipkit status)", "missing"),
        ("rebuilt into another split", "split_changed"),
    ):
        table.add_row(label, str(comparison[key]))
    ui.stdout.print(table)
