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
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from mipkit.config.recipe import Recipe
from mipkit.config.taxonomy import Taxonomy, load_taxonomy
from mipkit.core import ui
from mipkit.core.errors import MipkitError, NothingBuiltError, SessionBlockedError
from mipkit.core.files import write_json
from mipkit.core.ids import youtube_id
from mipkit.core.records import PENDING, SPLITS, TRANSIENT_STATUSES, SampleStatus, SourceRequest
from mipkit.kinds.mipnet import read_manifest
from mipkit.media.checks import preflight, require_youtube_support
from mipkit.pipeline.assemble import assemble, column_values
from mipkit.pipeline.engines import ENGINES, run_shards
from mipkit.pipeline.fetch import check_format
from mipkit.pipeline.plan import plan_splits
from mipkit.pipeline.politeness import HostGate
from mipkit.pipeline.shard import STATS_FILE, STATUS_FILE, ShardTask, is_done, plan_shards, run_shard, shards_root
from mipkit.pipeline.status import BUILD_FILE, MANIFEST_STATUS_FILE, build_dir, iter_statuses, status_report

# A reader turns the build's input into per-source requests plus the rows it rejected.
Reader = Callable[[Taxonomy], tuple[list[SourceRequest], list[SampleStatus]]]


@dataclass
class BuildOptions:
    """One build. ``manifest`` is the usual input; other inputs (AudioSet CSVs, a metadata-only
    release) pass a ``reader`` and the ``inputs`` files whose content identifies the build."""

    out: Path
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
        shutil.rmtree(build_dir(out), ignore_errors=True)
        (out / "dataset_dict.json").unlink(missing_ok=True)
        for split in SPLITS:
            shutil.rmtree(out / split, ignore_errors=True)
    build_dir(out).mkdir(parents=True, exist_ok=True)
    fingerprint = _fingerprint(opts.input_files, opts.recipe)
    record = build_dir(out) / BUILD_FILE
    if record.is_file():
        previous = json.loads(record.read_text())
        if previous.get("fingerprint") != fingerprint:
            raise MipkitError(
                f"{out.name!r} holds a build of a different manifest or recipe; pass --overwrite to start again, or choose another --out"
            )
    write_json(
        record,
        {
            "kind": opts.kind,
            "recipe": opts.recipe.to_dict(),
            "inputs": [p.name for p in opts.input_files],
            "fingerprint": fingerprint,
            "shards": shard_count,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        },
    )


def reopen_transient_shards(out: Path) -> int:
    """Un-commit every done shard holding a transient failure, so the next run fetches it again."""
    reopened = 0
    for folder in sorted(shards_root(out).glob("[0-9]*")):
        stats, statuses = folder / STATS_FILE, folder / STATUS_FILE
        if stats.is_file() and statuses.is_file():
            if any(
                json.loads(line)["status"] in TRANSIENT_STATUSES
                for line in statuses.read_text().splitlines()
                if line.strip()
            ):
                stats.unlink()
                reopened += 1
    return reopened


def label_distribution(out: Path, taxonomy_names: list[str]) -> dict[str, dict[str, int]]:
    """Counts per emotion and split, read from the assembled dataset's Arrow files (no media decode)."""
    from datasets import load_from_disk

    dataset = load_from_disk(str(out))
    table: dict[str, dict[str, int]] = {}
    for split in dataset:
        labels = column_values(dataset[split], "emotion")
        counts = Counter(taxonomy_names[i] if i is not None and i >= 0 else "unlabelled" for i in labels)
        table[split] = dict(counts)
    return table


def build(opts: BuildOptions) -> dict:
    """Run (or resume) a build and return its summary (also written to ``OUT/build/summary.json``)."""
    ytdlp = opts.recipe.ytdlp
    warnings = preflight(ytdlp.cookiefile, ytdlp.proxy, ytdlp.cookies_from_browser)  # before reading: fail in seconds
    check_format(ytdlp.format)
    if opts.engine not in ENGINES:
        raise MipkitError(f"--engine {opts.engine!r} is unknown; choose one of {', '.join(ENGINES)}")
    taxonomy = load_taxonomy(opts.recipe.taxonomy)
    sources, problems = opts.read(taxonomy)
    if any(youtube_id(s.url) for s in sources):
        require_youtube_support()
        for check in warnings:
            ui.console.print(f"[yellow]warning:[/yellow] {check.part} {check.version}: {check.fix}", soft_wrap=True)
    tasks = plan_shards(sources, opts.recipe.shards.sources_per_shard)
    if opts.out.exists() and not opts.out.is_dir():
        raise MipkitError(f"--out {opts.out.name!r} is a file; pass a folder (new or from an earlier build)")
    opts.out.mkdir(parents=True, exist_ok=True)
    _prepare(opts, len(tasks))
    write_json_lines(build_dir(opts.out) / MANIFEST_STATUS_FILE, [p.to_dict() for p in problems])

    if opts.retry_failed:
        reopened = reopen_transient_shards(opts.out)
        ui.console.print(f"--retry-failed: reopened {reopened} shard(s) with rate-limited or network failures")
    gate = HostGate(build_dir(opts.out), opts.recipe.politeness)
    for host in gate.reset_breakers():
        ui.console.print(f"{host} blocked the last run: trying it again, with the same politeness")
    pending = [t for t in tasks if not is_done(opts.out, t.index)]
    skipped = len(tasks) - len(pending)
    if skipped:
        ui.console.print(f"resuming: {skipped} of {len(tasks)} shards already done")
    began = time.time()
    errors: list[str] = []
    if pending:
        with ui.progress_bar("samples") as progress:
            bar = progress.add_task("building", total=sum(_expected_samples(t, opts.recipe) for t in pending), failed=0)

            def advance(statuses: list[str]) -> None:
                failed = sum(1 for s in statuses if s not in ("ok", PENDING))
                progress.update(bar, advance=len(statuses), failed=progress.tasks[bar].fields["failed"] + failed)

            def shard_done(task: ShardTask, stats: dict, streamed: bool) -> None:
                if not streamed:  # Ray: no per-source events, count the shard as a whole
                    advance([s for s, n in stats["counts"].items() for _ in range(n)])

            try:
                errors = run_shards(
                    pending,
                    run_shard,
                    (opts.recipe, opts.out),
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
    rows = assemble(opts.out, opts.recipe, taxonomy, split_of)
    report = status_report(opts.out)
    summary = {
        "counts": report["counts"],
        "splits": rows,
        "shards": report["shards"],
        "shard_errors": errors,
        "seconds_this_run": round(time.time() - began, 2),
    }
    if sum(rows.values()):
        distribution = label_distribution(opts.out, taxonomy.names)
        summary["emotion"] = distribution
        ui.bar_chart(
            opts.out / "label_distribution.png",
            "pairs per emotion and split",
            distribution,
            xlabel="emotion",
            ylabel="pairs",
        )
    write_json(build_dir(opts.out) / "summary.json", summary)
    if report["counts"].get(PENDING):
        left = {r.get("source_id") or r.get("url") for r in iter_statuses(opts.out) if r["status"] == PENDING}
        hosts = ", ".join(gate.tripped_hosts()) or "a host"
        raise SessionBlockedError(
            f"{hosts} kept answering with rate limits: {len(left)} source(s) left as pending; "
            "run the same command again later to fetch them",
            summary,
        )
    if not sum(rows.values()):
        raise NothingBuiltError(
            f"no pair could be built from {opts.input_name}; see `mipkit status {opts.out.name}` for the reason of each sample"
        )
    return summary


def write_json_lines(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)
