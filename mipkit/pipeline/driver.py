"""The build: read sources -> shard -> fetch + process (per shard) -> write.

Shards run in a local process pool (``engine="local"``) or as Ray tasks (``engine="ray"``); both
call the same ``run_shard``. Inside a shard a thread pool overlaps network waits: the CPU work
happens in ffmpeg subprocesses, so threads do not contend for the GIL.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mipkit.config.recipe import Recipe
from mipkit.config.taxonomy import Taxonomy, load_taxonomy
from mipkit.core import ui
from mipkit.core.errors import MipkitError, NothingBuiltError
from mipkit.core.ids import youtube_id
from mipkit.core.records import SPLITS, TRANSIENT_STATUSES, SampleStatus, SourceRequest
from mipkit.core.storage import Location, as_location
from mipkit.kinds.mipnet import read_manifest
from mipkit.media.ffmpeg import require_ffmpeg
from mipkit.pipeline.assemble import assemble
from mipkit.pipeline.engines import ENGINES, engine_session, run_shards
from mipkit.pipeline.fetch import check_format, youtube_support_problems
from mipkit.pipeline.plan import plan_splits
from mipkit.pipeline.shard import (
    STATS_FILE,
    STATUS_FILE,
    ShardTask,
    done_indices,
    done_shard_dirs,
    plan_shards,
    run_shard,
    scratch_dir,
)
from mipkit.pipeline.status import BUILD_FILE, MANIFEST_STATUS_FILE, build_dir, status_report

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
    shared_fs: bool = False  # a local --out that every node of a cluster sees (NFS, Lustre, ...)

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


def _prepare(opts: BuildOptions, shard_count: int) -> None:
    out = opts.out
    if opts.overwrite and out.exists():
        build_dir(out).rmtree()
        (out / "dataset_dict.json").unlink()
        for split in SPLITS:
            (out / split).rmtree()
    build_dir(out).mkdir()
    fingerprint = _fingerprint(opts.input_files, opts.recipe)
    record = build_dir(out) / BUILD_FILE
    if record.is_file():
        previous = json.loads(record.read_text())
        if previous.get("fingerprint") != fingerprint:
            raise MipkitError(
                f"{out.display!r} holds a build of a different manifest or recipe; pass --overwrite to start again, or choose another --out"
            )
    record.write_json(
        {
            "kind": opts.kind,
            "recipe": opts.recipe.to_dict(),
            "inputs": [p.name for p in opts.input_files],
            "fingerprint": fingerprint,
            "shards": shard_count,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )


def reopen_transient_shards(out: Location | Path) -> int:
    """Un-commit every done shard holding a transient failure, so the next run fetches it again."""
    reopened = 0
    for folder in done_shard_dirs(out):
        stats, statuses = folder / STATS_FILE, folder / STATUS_FILE
        if statuses.is_file():
            if any(
                json.loads(line)["status"] in TRANSIENT_STATUSES
                for line in statuses.read_text().splitlines()
                if line.strip()
            ):
                stats.unlink()
                reopened += 1
    return reopened


def check_cluster_can_reach(out: Location, nodes: int, shared_fs: bool) -> None:
    """Workers on other nodes write their shards to ``--out``: a local folder there is another disk."""
    if nodes > 1 and out.is_local and not shared_fs:
        raise MipkitError(
            f"--out {out.name!r} is a local folder but the Ray cluster has {nodes} nodes, whose shards would land on "
            "their own disks; use an object-store URL (e.g. --out s3://bucket/run) or, for a folder every node mounts, "
            "add --shared-fs"
        )


def save_chart(target: Location, distribution: dict[str, dict[str, int]]) -> None:
    """The chart is drawn on local scratch, then copied to the output (which may be a store)."""
    scratch = scratch_dir("chart")
    try:
        local = ui.bar_chart(
            scratch / target.name, "pairs per emotion and split", distribution, xlabel="emotion", ylabel="pairs"
        )
        target.upload(local)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def build(opts: BuildOptions) -> dict:
    """Run (or resume) a build and return its summary (also written to ``OUT/build/summary.json``)."""
    require_ffmpeg()
    check_format(opts.recipe.ytdlp.format)
    if opts.engine not in ENGINES:
        raise MipkitError(f"--engine {opts.engine!r} is unknown; choose one of {', '.join(ENGINES)}")
    taxonomy = load_taxonomy(opts.recipe.taxonomy)
    sources, problems = opts.read(taxonomy)
    if any(youtube_id(s.url) for s in sources):
        missing = youtube_support_problems()
        if missing:
            ui.console.print(
                f"[yellow]warning:[/yellow] YouTube sources need {' and '.join(missing)}; without it yt-dlp may "
                "find no formats and those samples end as download_error",
                soft_wrap=True,
            )
    tasks = plan_shards(sources, opts.recipe.shards.sources_per_shard)
    if opts.out.exists() and not opts.out.is_dir():
        raise MipkitError(f"--out {opts.out.display!r} is a file; pass a folder (new or from an earlier build)")
    with engine_session(opts.engine, opts.workers, opts.ray_address) as nodes:
        check_cluster_can_reach(opts.out, nodes, opts.shared_fs)
        return _run(opts, taxonomy, sources, problems, tasks)


def _run(opts: BuildOptions, taxonomy: Taxonomy, sources, problems, tasks: list[ShardTask]) -> dict:
    out: Location = opts.out
    out.mkdir()
    _prepare(opts, len(tasks))
    write_json_lines(build_dir(out) / MANIFEST_STATUS_FILE, [p.to_dict() for p in problems])
    merged = merged_spellings(sources)
    write_json_lines(build_dir(out) / MERGED_SOURCES_FILE, merged)
    if merged:
        ui.console.print(
            f"{len(merged)} source(s) appear under several URL spellings and are built once each "
            f"(see build/{MERGED_SOURCES_FILE})"
        )

    if opts.retry_failed:
        reopened = reopen_transient_shards(out)
        ui.console.print(f"--retry-failed: reopened {reopened} shard(s) with rate-limited or network failures")
    done = done_indices(out)
    pending = [t for t in tasks if t.index not in done]
    skipped = len(tasks) - len(pending)
    if skipped:
        ui.console.print(f"resuming: {skipped} of {len(tasks)} shards already done")
    began = time.time()
    errors: list[str] = []
    if pending:
        with ui.progress_bar("samples") as progress:
            bar = progress.add_task("building", total=sum(_expected_samples(t, opts.recipe) for t in pending), failed=0)

            def advance(statuses: list[str]) -> None:
                failed = sum(1 for s in statuses if s != "ok")
                progress.update(bar, advance=len(statuses), failed=progress.tasks[bar].fields["failed"] + failed)

            def shard_done(task: ShardTask, stats: dict, streamed: bool) -> None:
                if not streamed:  # Ray: no per-source events, count the shard as a whole
                    advance([s for s, n in stats["counts"].items() for _ in range(n)])

            try:
                errors = run_shards(
                    pending,
                    run_shard,
                    (opts.recipe, out),
                    workers=opts.workers,
                    engine=opts.engine,
                    on_event=advance,
                    on_done=shard_done,
                )
            except KeyboardInterrupt:
                ui.console.print("interrupted: committed shards are kept; run the same command again to resume")
                raise
    for error in errors:
        ui.console.print(f"[red]{error}[/red] (the shard is not committed; run the same command again to retry it)")

    splits = opts.recipe.splits
    split_of = plan_splits(sources, splits.ratios(), splits.seed, splits.stratify_by, opts.split_of)
    assembly_began = time.time()
    rows, distribution = assemble(out, opts.recipe, taxonomy, split_of, workers=opts.workers, engine=opts.engine)
    report = status_report(out)
    summary = {
        "counts": report["counts"],
        "splits": rows,
        "shards": report["shards"],
        "shard_errors": errors,
        "seconds_this_run": round(time.time() - began, 2),
        "seconds_assembly": round(time.time() - assembly_began, 2),
    }
    if sum(rows.values()):
        summary["emotion"] = distribution
        save_chart(out / "label_distribution.png", distribution)
    (build_dir(out) / "summary.json").write_json(summary)
    if not sum(rows.values()):
        raise NothingBuiltError(
            f"no pair could be built from {opts.input_name}; see `mipkit status {out.display}` for the reason of each sample"
        )
    return summary


def merged_spellings(sources: list[SourceRequest]) -> list[dict]:
    """The sources whose input named them in several spellings: what was merged into one id (and one split)."""
    return [{"source_id": s.source_id, "url": s.url, "spellings": s.spellings} for s in sources if len(s.spellings) > 1]


def write_json_lines(path: Location | Path, rows: list[dict]) -> None:
    as_location(path).write_text("".join(json.dumps(r) + "\n" for r in rows))
