"""Builds of image-music pairs (and audio-only mood clips) from any reader of sources: one ``Kind`` for the driver.

``mipkit build mipnet`` reads a manifest (``mipkit.kinds.mipnet``), ``build audioset-mood`` AudioSet's
segment CSVs (``mipkit.kinds.audioset_mood``) and ``hydrate`` a metadata-only release; each passes its
reader here. This module plans splits and shards, then hands the kind (pair shards, their assembly,
the label chart) to ``mipkit.pipeline.driver.run_build``, which runs it like every other kind.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mipkit.config.recipe import Recipe
from mipkit.config.taxonomy import Taxonomy, load_taxonomy
from mipkit.core import ui
from mipkit.core.errors import MipkitError
from mipkit.core.ids import youtube_id
from mipkit.core.records import SampleStatus, SourceRequest
from mipkit.core.storage import Location, as_location
from mipkit.kinds.mipnet import read_manifest
from mipkit.media.checks import preflight, require_youtube_support
from mipkit.pipeline.assemble import MODEL_LABELS_FILE, assemble, check_shard_media, drop_shard_media
from mipkit.pipeline.driver import Kind, run_build, save_chart, write_json_lines
from mipkit.pipeline.fetch import check_format
from mipkit.pipeline.parallelism import describe as describe_parallelism
from mipkit.pipeline.plan import plan_splits
from mipkit.pipeline.shard import ShardTask, plan_shards, run_shard
from mipkit.pipeline.status import build_dir

MERGED_SOURCES_FILE = "merged_sources.jsonl"  # spellings of one source merged into one id, so into one split

# A reader turns the build's input into per-source requests plus the rows it rejected.
Reader = Callable[[Taxonomy], tuple[list[SourceRequest], list[SampleStatus]]]


@dataclass
class BuildOptions:
    """One build. ``manifest`` is the usual input; other inputs (AudioSet CSVs, a metadata-only
    release) pass a ``reader`` and the ``inputs`` files whose content identifies the build."""

    out: Location | Path | str  # a local folder or an fsspec URL (s3://bucket/prefix, gs://..., file://...)
    recipe: Recipe
    manifest: Path | None = None
    reader: Reader | None = None
    inputs: list[Path] = field(default_factory=list)
    kind: str = "mipnet"
    workers: int = 1
    engine: str = "local"
    overwrite: bool = False
    retry_failed: bool = False
    split_of: dict[str, str] | None = None  # source id -> split, for sources whose split is given (hydrate)
    ray_address: str | None = None  # --ray-address; RAY_ADDRESS in the environment does the same
    shared_fs: bool = False  # a local --out that every node of a cluster mounts (NFS, Lustre, ...)
    keep_shard_media: bool = False  # keep the media in the shards too (two copies), as before issue 12

    def __post_init__(self) -> None:
        self.out = as_location(self.out)

    def read(self, taxonomy: Taxonomy) -> tuple[list[SourceRequest], list[SampleStatus]]:
        if self.reader is not None:
            return self.reader(taxonomy)
        if self.manifest is None:
            raise MipkitError("no input: pass --manifest with a CSV, JSONL or Parquet file")
        return read_manifest(self.manifest, taxonomy)

    @property
    def input_files(self) -> list[Path]:
        return self.inputs or ([self.manifest] if self.manifest else [])

    @property
    def input_name(self) -> str:
        return ", ".join(p.name for p in self.input_files) or self.kind


def _fingerprint(inputs: list[Path], recipe: Recipe) -> str:
    """What decides shard contents: a resumed build must match it, or its shards would mix."""
    digest = hashlib.sha256()
    for path in inputs:
        digest.update(path.read_bytes())
    relevant = {
        "clip": recipe.to_dict()["clip"],
        "taxonomy": recipe.taxonomy,
        "sources_per_shard": recipe.shards.sources_per_shard,
        "format": recipe.ytdlp.format,
        "force_keyframes_at_cuts": recipe.ytdlp.force_keyframes_at_cuts,
    }
    digest.update(json.dumps(relevant, sort_keys=True).encode())
    return digest.hexdigest()


def _expected_samples(task: ShardTask, recipe: Recipe) -> int:
    return sum(1 if w.start_s is not None else recipe.clip.clips_per_source for s in task.sources for w in s.windows)


def build(opts: BuildOptions) -> dict:
    """Run (or resume) a build from a manifest or another reader of sources; returns its summary."""
    ytdlp = opts.recipe.ytdlp
    warnings = preflight(ytdlp.cookiefile, ytdlp.proxy, ytdlp.cookies_from_browser)  # before reading: fail in seconds
    check_format(ytdlp.format)
    taxonomy = load_taxonomy(opts.recipe.taxonomy)
    sources, problems = opts.read(taxonomy)
    if any(youtube_id(s.url) for s in sources):
        require_youtube_support()
        for check in warnings:
            ui.console.print(f"[yellow]warning:[/yellow] {check.part} {check.version}: {check.fix}", soft_wrap=True)
    splits = opts.recipe.splits
    split_of = plan_splits(sources, splits.ratios(), splits.seed, splits.stratify_by, opts.split_of)

    distribution: dict[str, dict[str, int]] = {}

    def assemble_pairs(out: Location) -> dict[str, int]:
        rows, counts = assemble(out, opts.recipe, taxonomy, split_of, workers=opts.workers, engine=opts.engine)
        distribution.update(counts)
        return rows

    def assembly_inputs(out: Location) -> str:
        labels = build_dir(out) / MODEL_LABELS_FILE  # a relabel's overlay
        overlay = hashlib.sha256(labels.read_bytes()).hexdigest() if labels.is_file() else ""
        plan = {"recipe": opts.recipe.to_dict(), "labels": taxonomy.names, "splits": sorted(split_of.items())}
        return json.dumps(plan, sort_keys=True, default=str) + overlay

    def record_merged_spellings(out: Location) -> None:
        # Printed once the output is ours and locked, so a refused run stays a one-line error.
        ui.console.print(describe_parallelism(opts.workers, opts.recipe.shards.fetch_threads))
        merged = merged_spellings(sources)
        write_json_lines(build_dir(out) / MERGED_SOURCES_FILE, merged)
        if merged:
            ui.console.print(
                f"{len(merged)} source(s) appear under several URL spellings and are built once each "
                f"(see build/{MERGED_SOURCES_FILE})"
            )

    def finish(out: Location, rows: dict[str, int]) -> dict:
        if not sum(rows.values()):
            return {}
        save_chart(out / "label_distribution.png", distribution)
        return {"emotion": distribution}

    kind = Kind(
        name=opts.kind,
        tasks=plan_shards(sources, opts.recipe.shards.sources_per_shard),
        shard_fn=run_shard,
        shard_args=(opts.recipe, opts.out),
        fingerprint=_fingerprint(opts.input_files, opts.recipe),
        assemble=assemble_pairs,
        record={"recipe": opts.recipe.to_dict(), "inputs": [p.name for p in opts.input_files]},
        problems=[p.to_dict() for p in problems],
        expected=lambda task: _expected_samples(task, opts.recipe),
        on_prepared=record_merged_spellings,
        assembly_inputs=assembly_inputs,
        finish=finish,
        check_media=check_shard_media,
        settle=None if opts.keep_shard_media else drop_shard_media,
        nothing_built=f"no pair could be built from {opts.input_name}",
    )
    return run_build(
        opts.out,
        kind,
        workers=opts.workers,
        engine=opts.engine,
        overwrite=opts.overwrite,
        retry_failed=opts.retry_failed,
        ray_address=opts.ray_address,
        shared_fs=opts.shared_fs,
    )


def merged_spellings(sources: list[SourceRequest]) -> list[dict]:
    """The sources whose input named them in several spellings: what was merged into one id (and one split)."""
    return [{"source_id": s.source_id, "url": s.url, "spellings": s.spellings} for s in sources if len(s.spellings) > 1]
