"""The build driver, one for every kind: read sources -> shard -> fetch + process (per shard) -> write.

A build kind (``Kind``) is its shard tasks, the function that builds and commits one shard, what
identifies the build (its fingerprint) and its assembly into rows of its schema. ``run_build`` does
the rest the same way for every kind: lock and claim ``OUT``, prepare or resume ``OUT/build``,
reopen failed shards (``--retry-failed``), run the pending shards with progress, assemble, report.
``build`` plugs in the manifest-like inputs (mipnet, audioset-mood, hydrate); YouTube-8M plugs in
from ``mipkit.kinds.yt8m.build``.

Shards run in a local process pool (``engine="local"``) or as Ray tasks (``engine="ray"``). Inside a
shard a thread pool overlaps network waits: the CPU work happens in ffmpeg subprocesses, so threads
do not contend for the GIL.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mipkit.config.recipe import Recipe
from mipkit.config.taxonomy import Taxonomy, load_taxonomy
from mipkit.core import ui
from mipkit.core.errors import MipkitError, NothingBuiltError, SessionBlockedError
from mipkit.core.files import write_json
from mipkit.core.ids import youtube_id
from mipkit.core.ownership import check_replaceable, remove_owned, write_marker, writing
from mipkit.core.records import OK, PENDING, SPLITS, TRANSIENT_STATUSES, SampleStatus, SourceRequest
from mipkit.kinds.mipnet import read_manifest
from mipkit.media.checks import preflight, require_youtube_support
from mipkit.pipeline.assemble import assemble, column_values
from mipkit.pipeline.engines import ENGINES, ShardFn, run_shards
from mipkit.pipeline.fetch import check_format
from mipkit.pipeline.parallelism import describe as describe_parallelism
from mipkit.pipeline.plan import plan_splits
from mipkit.pipeline.politeness import GATE_DIR, HostGate
from mipkit.pipeline.shard import STATS_FILE, STATUS_FILE, ShardTask, is_done, plan_shards, run_shard, shards_root
from mipkit.pipeline.status import BUILD_FILE, MANIFEST_STATUS_FILE, build_dir, iter_statuses, status_report

MERGED_SOURCES_FILE = "merged_sources.jsonl"  # spellings of one source merged into one id, so into one split

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


@dataclass
class Kind:
    """A build kind, as the driver sees it."""

    name: str  # build.json "kind"
    tasks: list  # shard tasks, each with an ``index``
    shard_fn: ShardFn  # builds and commits one shard: ``(task, *shard_args, on_event=...) -> stats``
    shard_args: tuple
    fingerprint: str  # what decides shard contents: a resumed build must match it
    # committed shards -> OUT's DatasetDict (through assemble.save_splits); returns rows per split
    assemble: Callable[[Path], dict[str, int]]
    record: dict = field(default_factory=dict)  # more build.json fields (recipe, inputs, ...)
    problems: list[dict] = field(default_factory=list)  # input rows rejected before sharding
    expected: Callable[[Any], int] | None = None  # samples a task reports; None: its shard sends ("total", n) itself
    unit: str = "samples"
    task_name: str = "shard"  # what one task is called in messages
    describe: Callable[[Any], str] = lambda task: f"shard {task.index}"
    finish: Callable[[Path, dict[str, int]], dict] | None = None  # more summary fields, once assembled
    on_prepared: Callable[[Path], None] | None = None  # writes more into OUT/build once it is claimed
    changed: str = "a different manifest or recipe"  # what another fingerprint means, in the refusal
    nothing_built: str = "no pair could be built"


def _prepare(out: Path, kind: Kind, owner: str, overwrite: bool) -> None:
    ours = [build_dir(out), *(out / split for split in SPLITS)]
    for folder in ours:  # every refusal before any deletion
        check_replaceable(folder, owner)
    if overwrite:
        for folder in ours:
            remove_owned(folder, owner)
        (out / "dataset_dict.json").unlink(missing_ok=True)
    build_dir(out).mkdir(parents=True, exist_ok=True)
    write_marker(build_dir(out), owner)
    record = build_dir(out) / BUILD_FILE
    if record.is_file() and json.loads(record.read_text()).get("fingerprint") != kind.fingerprint:
        raise MipkitError(
            f"{out.name!r} holds a build of {kind.changed}; pass --overwrite to start again, or choose another --out"
        )
    write_json(
        record,
        {
            "kind": kind.name,
            **kind.record,
            "fingerprint": kind.fingerprint,
            "owner": owner,
            "shards": len(kind.tasks),
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


def run_build(
    out: Path,
    kind: Kind,
    *,
    workers: int = 1,
    engine: str = "local",
    overwrite: bool = False,
    retry_failed: bool = False,
) -> dict:
    """Run (or resume) a build of any kind; returns its summary (also written to ``OUT/build/summary.json``).

    The run holds ``OUT``'s lock throughout and writes only into a folder that is new, empty or its own."""
    if engine not in ENGINES:
        raise MipkitError(f"--engine {engine!r} is unknown; choose one of {', '.join(ENGINES)}")
    with writing(out) as owner:
        _prepare(out, kind, owner, overwrite)
        write_json_lines(build_dir(out) / MANIFEST_STATUS_FILE, kind.problems)
        if kind.on_prepared is not None:
            kind.on_prepared(out)
        if retry_failed:
            reopened = reopen_transient_shards(out)
            ui.console.print(
                f"--retry-failed: reopened {reopened} {kind.task_name}(s) with rate-limited or network failures"
            )
        gate = HostGate(build_dir(out)) if (build_dir(out) / GATE_DIR).is_dir() else None
        for host in gate.reset_breakers() if gate else []:
            ui.console.print(f"{host} blocked the last run: trying it again, with the same politeness")
        pending = [t for t in kind.tasks if not is_done(out, t.index)]
        if len(pending) < len(kind.tasks):
            ui.console.print(
                f"resuming: {len(kind.tasks) - len(pending)} of {len(kind.tasks)} {kind.task_name}s already done"
            )
        began = time.time()
        errors = _run_with_progress(kind, pending, workers, engine) if pending else []
        for error in errors:
            ui.console.print(
                f"[red]{error}[/red] (the {kind.task_name} is not committed; run the same command again to retry it)"
            )
        rows = kind.assemble(out)
        report = status_report(out)
        summary = {
            "counts": report["counts"],
            "skipped": report.get("skipped", {}),
            "splits": rows,
            "shards": report["shards"],
            "shard_errors": errors,
            "seconds_this_run": round(time.time() - began, 2),
        }
        if kind.finish is not None:
            summary.update(kind.finish(out, rows))
        write_json(build_dir(out) / "summary.json", summary)
    if report["counts"].get(PENDING):
        left = {r.get("source_id") or r.get("url") for r in iter_statuses(out) if r["status"] == PENDING}
        hosts = ", ".join(HostGate(build_dir(out)).tripped_hosts()) or "a host"
        raise SessionBlockedError(
            f"{hosts} kept answering with rate limits: {len(left)} source(s) left as pending; "
            "run the same command again later to fetch them",
            summary,
        )
    if not sum(rows.values()):
        raise NothingBuiltError(f"{kind.nothing_built}; see `mipkit status {out.name}` for the reason of each sample")
    return summary


def _run_with_progress(kind: Kind, pending: list, workers: int, engine: str) -> list[str]:
    """``run_shards`` under one progress bar. Shard events: ``{status: count}`` of finished samples, or
    ``("total", n)`` when a shard learns how many it will report (kinds without ``expected``)."""
    with ui.progress_bar(kind.unit) as progress:

        def label(done: int) -> str:
            return f"building · {kind.task_name}s {done}/{len(pending)}"

        bar = progress.add_task(
            label(0), total=sum(kind.expected(t) for t in pending) if kind.expected else 0, failed=0
        )
        finished = [0]

        def on_event(event: dict | tuple) -> None:
            if isinstance(event, tuple):
                progress.update(bar, total=(progress.tasks[bar].total or 0) + int(event[1]))
                return
            failed = sum(n for status, n in event.items() if status not in (OK, PENDING))
            progress.update(bar, advance=sum(event.values()), failed=progress.tasks[bar].fields["failed"] + failed)

        def on_done(task, stats: dict, streamed: bool) -> None:
            if not streamed:  # Ray: no events from inside the shard, its counts arrive at its end
                if kind.expected is None:
                    on_event(("total", stats["requested"]))
                on_event(stats["counts"])
            finished[0] += 1
            progress.update(bar, description=label(finished[0]))

        return run_shards(
            pending,
            kind.shard_fn,
            kind.shard_args,
            workers=workers,
            engine=engine,
            on_event=on_event,
            on_done=on_done,
            describe=kind.describe,
        )


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

    def record_merged_spellings(out: Path) -> None:
        # Printed once the output is ours and locked, so a refused run stays a one-line error.
        ui.console.print(describe_parallelism(opts.workers, opts.recipe.shards.fetch_threads))
        merged = merged_spellings(sources)
        write_json_lines(build_dir(out) / MERGED_SOURCES_FILE, merged)
        if merged:
            ui.console.print(
                f"{len(merged)} source(s) appear under several URL spellings and are built once each "
                f"(see build/{MERGED_SOURCES_FILE})"
            )

    def finish(out: Path, rows: dict[str, int]) -> dict:
        if not sum(rows.values()):
            return {}
        distribution = label_distribution(out, taxonomy.names)
        ui.bar_chart(
            out / "label_distribution.png",
            "pairs per emotion and split",
            distribution,
            xlabel="emotion",
            ylabel="pairs",
        )
        return {"emotion": distribution}

    kind = Kind(
        name=opts.kind,
        tasks=plan_shards(sources, opts.recipe.shards.sources_per_shard),
        shard_fn=run_shard,
        shard_args=(opts.recipe, opts.out),
        fingerprint=_fingerprint(opts.input_files, opts.recipe),
        assemble=lambda out: assemble(out, opts.recipe, taxonomy, split_of),
        record={"recipe": opts.recipe.to_dict(), "inputs": [p.name for p in opts.input_files]},
        problems=[p.to_dict() for p in problems],
        expected=lambda task: _expected_samples(task, opts.recipe),
        on_prepared=record_merged_spellings,
        finish=finish,
        nothing_built=f"no pair could be built from {opts.input_name}",
    )
    return run_build(
        opts.out,
        kind,
        workers=opts.workers,
        engine=opts.engine,
        overwrite=opts.overwrite,
        retry_failed=opts.retry_failed,
    )


def merged_spellings(sources: list[SourceRequest]) -> list[dict]:
    """The sources whose input named them in several spellings: what was merged into one id (and one split)."""
    return [{"source_id": s.source_id, "url": s.url, "spellings": s.spellings} for s in sources if len(s.spellings) > 1]


def write_json_lines(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tmp.replace(path)
