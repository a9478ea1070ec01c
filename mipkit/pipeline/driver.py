"""The build driver, one for every kind: read sources -> shard -> fetch + process (per shard) -> write.

A build kind (``Kind``) is its shard tasks, the function that builds and commits one shard, what
identifies the build (its fingerprint) and its assembly into rows of its schema. ``run_build`` does
the rest the same way for every kind: lock and claim ``OUT``, prepare or resume ``OUT/build``,
reopen failed shards (``--retry-failed``), run the pending shards with progress, assemble, report.
A rerun that finds every shard done and the dataset as its last assembly left it (``build/assembled.json``)
skips the assembly and says the dataset is up to date. A complete build then settles (``Kind.settle``:
the pair kinds drop from the shards the media the dataset holds, so the media are stored once).
Kinds plug in from ``mipkit.kinds``: ``kinds.pairs`` for the manifest-like inputs (mipnet,
audioset-mood, hydrate), ``kinds.yt8m.build`` for YouTube-8M.

Shards run in a local process pool (``engine="local"``) or as Ray tasks (``engine="ray"``, which
joins a cluster through ``--ray-address`` / ``RAY_ADDRESS``). Inside a shard a thread pool overlaps
network waits: the CPU work happens in ffmpeg subprocesses, so threads do not contend for the GIL.
``OUT`` is a local folder or an fsspec URL (``mipkit.core.storage``); on a cluster of several nodes a
local ``OUT`` is refused unless ``--shared-fs`` says every node mounts it.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mipkit.core import ui
from mipkit.core.errors import MipkitError, NothingBuiltError, SessionBlockedError
from mipkit.core.ownership import check_replaceable, remove_owned, write_marker, writing
from mipkit.core.records import OK, PENDING, SPLITS, TRANSIENT_STATUSES
from mipkit.core.storage import Location, as_location
from mipkit.pipeline.engines import ENGINES, ShardFn, engine_session, run_shards
from mipkit.pipeline.politeness import GATE_DIR, HostGate, gate_home
from mipkit.pipeline.shard import (
    REOPENED_FILE,
    STATS_FILE,
    STATUS_FILE,
    complete_indices,
    done_shard_dirs,
    private_area,
    scratch_dir,
)
from mipkit.pipeline.status import BUILD_FILE, MANIFEST_STATUS_FILE, build_dir, iter_statuses, status_report


@dataclass
class Kind:
    """A build kind, as the driver sees it."""

    name: str  # build.json "kind"
    tasks: list  # shard tasks, each with an ``index``
    shard_fn: ShardFn  # builds and commits one shard: ``(task, *shard_args, on_event=...) -> stats``
    shard_args: tuple
    fingerprint: str  # what decides shard contents: a resumed build must match it
    assemble: Callable[[Location], dict[str, int]]  # committed shards -> OUT's DatasetDict; rows per split
    record: dict = field(default_factory=dict)  # more build.json fields (recipe, inputs, ...)
    problems: list[dict] = field(default_factory=list)  # input rows rejected before sharding
    expected: Callable[[Any], int] | None = None  # samples a task reports; None: its shard sends ("total", n) itself
    unit: str = "samples"
    task_name: str = "shard"  # what one task is called in messages
    describe: Callable[[Any], str] = lambda task: f"shard {task.index}"
    finish: Callable[[Location, dict[str, int]], dict] | None = None  # more summary fields, once assembled
    on_prepared: Callable[[Location], None] | None = None  # writes more into OUT/build once it is claimed
    changed: str = "a different manifest or recipe"  # what another fingerprint means, in the refusal
    # what else the assembly reads besides the shards (split plan, schema, relabels): any change re-assembles
    assembly_inputs: Callable[[Location], str] = lambda out: ""
    nothing_built: str = "no pair could be built"
    # before shards run: un-commits the shards whose media the dataset in OUT no longer holds
    check_media: Callable[[Location], Any] | None = None
    # once a complete build is assembled (or found up to date): drops from the shards what the dataset holds
    settle: Callable[[Location], Any] | None = None


def _prepare(out: Location, kind: Kind, owner: str, overwrite: bool) -> None:
    ours = [build_dir(out), *(out / split for split in SPLITS)]
    for folder in ours:  # every refusal before any deletion
        check_replaceable(folder, owner)
    if overwrite:
        for folder in ours:
            remove_owned(folder, owner)
        (out / "dataset_dict.json").unlink()
    build_dir(out).mkdir()
    write_marker(build_dir(out), owner)
    record = build_dir(out) / BUILD_FILE
    if record.is_file() and json.loads(record.read_text()).get("fingerprint") != kind.fingerprint:
        raise MipkitError(
            f"{out.display!r} holds a build of {kind.changed}; pass --overwrite to start again, or choose another --out"
        )
    record.write_json(
        {
            "kind": kind.name,
            **kind.record,
            "fingerprint": kind.fingerprint,
            "owner": owner,
            "shards": len(kind.tasks),
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
                (folder / REOPENED_FILE).write_bytes(stats.read_bytes())  # the redo keeps its ok samples
                stats.unlink()
                reopened += 1
    return reopened


def check_cluster_can_reach(
    out: Location,
    nodes: int,
    shared_fs: bool,
    flag: str = "--out",
    why: str = "whose shards would land on their own disks",
) -> None:
    """Workers on other nodes write their shards to ``OUT`` themselves (or, for ``label``, read the dataset
    there): a local folder is another disk on each node."""
    if nodes > 1 and out.is_local and not shared_fs:
        raise MipkitError(
            f"{flag} {out.name!r} is a local folder but the Ray cluster has {nodes} nodes, {why}; "
            f"use an object-store URL (e.g. {flag} s3://bucket/run) or, for a folder every node mounts, add --shared-fs"
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


ASSEMBLED_FILE = "assembled.json"  # OUT/build/: what the dataset in OUT was assembled from


def _assembly_key(out: Location, kind: Kind) -> str:
    """The committed shards (ids and each ``stats.json``'s content), the build fingerprint and the kind's
    other assembly inputs: equal keys mean an assembly would write the same dataset again."""
    digest = hashlib.sha256(f"{kind.name}\0{kind.fingerprint}\0{kind.assembly_inputs(out)}\0".encode())
    for folder in done_shard_dirs(out):
        digest.update(f"{folder.name}\0".encode())
        digest.update(hashlib.sha256((folder / STATS_FILE).read_bytes()).digest())
    return digest.hexdigest()


def _dataset_listing(out: Location) -> dict[str, list]:
    """Every file of the assembled dataset (``dataset_dict.json`` and the split folders) with its size and
    modification stamp: a deleted, added or rewritten file changes it."""
    listing = {}
    for name in ["dataset_dict.json", *SPLITS]:
        target = out / name
        found = target.fs.find(target.path, detail=True) if target.exists() else {}
        listing[name] = sorted(
            [
                posixpath.relpath(path, target.path) if path != target.path else ".",
                *(str(info[k]) for k in ("size", "mtime", "ino", "ETag", "LastModified") if k in info),
            ]
            for path, info in found.items()
        )
    return listing


def _up_to_date(out: Location, key: str) -> dict | None:
    """The record of the last assembly when the dataset still is what it wrote from these shards, else None."""
    record = build_dir(out) / ASSEMBLED_FILE
    if not record.is_file():
        return None
    try:
        previous = json.loads(record.read_text())
    except ValueError:
        return None
    if previous.get("key") != key or previous.get("listing") != json.loads(json.dumps(_dataset_listing(out))):
        return None
    return previous


def run_build(
    out: Location | Path | str,
    kind: Kind,
    *,
    workers: int = 1,
    engine: str = "local",
    overwrite: bool = False,
    retry_failed: bool = False,
    ray_address: str | None = None,
    shared_fs: bool = False,
) -> dict:
    """Run (or resume) a build of any kind; returns its summary (also written to ``OUT/build/summary.json``).

    The run holds ``OUT``'s lock throughout and writes only into a folder that is new, empty or its own."""
    if engine not in ENGINES:
        raise MipkitError(f"--engine {engine!r} is unknown; choose one of {', '.join(ENGINES)}")
    out = as_location(out)
    with engine_session(engine, workers, ray_address) as nodes, writing(out) as owner:
        check_cluster_can_reach(out, nodes, shared_fs)
        _prepare(out, kind, owner, overwrite)
        shutil.rmtree(private_area(out), ignore_errors=True)  # what a killed run left (a cookies copy, scratch)
        try:
            summary, report, rows = _run_prepared(out, kind, workers, engine, retry_failed)
        finally:
            shutil.rmtree(private_area(out), ignore_errors=True)
    if report["counts"].get(PENDING):
        left = {r.get("source_id") or r.get("url") for r in iter_statuses(out) if r["status"] == PENDING}
        hosts = ", ".join(HostGate(gate_home(out)).tripped_hosts()) or "a host"
        raise SessionBlockedError(
            f"{hosts} kept answering with rate limits: {len(left)} source(s) left as pending; "
            "run the same command again later to fetch them",
            summary,
        )
    if not sum(rows.values()):
        raise NothingBuiltError(
            f"{kind.nothing_built}; see `mipkit status {out.display}` for the reason of each sample"
        )
    return summary


def _run_prepared(out: Location, kind: Kind, workers: int, engine: str, retry_failed: bool) -> tuple:
    """The build itself, once ``OUT`` is locked and prepared: shards, assembly, summary."""
    write_json_lines(build_dir(out) / MANIFEST_STATUS_FILE, kind.problems)
    if kind.on_prepared is not None:
        kind.on_prepared(out)
    if retry_failed:
        reopened = reopen_transient_shards(out)
        ui.console.print(
            f"--retry-failed: reopened {reopened} {kind.task_name}(s) with rate-limited or network failures"
        )
    if kind.check_media is not None:
        kind.check_media(out)
    home = gate_home(out)
    gate = HostGate(home) if (home / GATE_DIR).is_dir() else None
    for host in gate.reset_breakers() if gate else []:
        ui.console.print(f"{host} blocked the last run: trying it again, with the same politeness")
    done = complete_indices(out)
    pending = [t for t in kind.tasks if t.index not in done]
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
    assembly_began = time.time()
    complete = not errors and complete_indices(out) >= {t.index for t in kind.tasks}
    key = _assembly_key(out, kind) if complete else None
    previous = _up_to_date(out, key) if complete and not pending else None  # a shard built now: assemble
    if previous is not None:
        ui.console.print(
            f"dataset up to date: all {len(kind.tasks)} {kind.task_name}s done and assembled, nothing to do "
            "(--overwrite starts again)"
        )
        rows, extra = previous["rows"], previous["extra"]
    else:
        (build_dir(out) / ASSEMBLED_FILE).unlink()  # a killed assembly must never look finished
        rows = kind.assemble(out)
        extra = kind.finish(out, rows) if kind.finish is not None else {}
        if complete:
            (build_dir(out) / ASSEMBLED_FILE).write_json(
                {"key": key, "rows": rows, "extra": extra, "listing": _dataset_listing(out)}
            )
    assembly_seconds = round(time.time() - assembly_began, 2)
    settle_began = time.time()
    if complete and kind.settle is not None:  # after the records: a kill here leaves a finished build to settle
        kind.settle(out)
    report = status_report(out)
    summary = {
        "counts": report["counts"],
        "skipped": report.get("skipped", {}),
        "splits": rows,
        "shards": report["shards"],
        "shard_errors": errors,
        "seconds_this_run": round(time.time() - began, 2),
        "seconds_assembly": assembly_seconds,
    }
    if kind.settle is not None:
        summary["seconds_settle"] = round(time.time() - settle_began, 2)
    summary.update(extra)
    (build_dir(out) / "summary.json").write_json(summary)
    return summary, report, rows


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


def write_json_lines(path: Location | Path, rows: list[dict]) -> None:
    as_location(path).write_text("".join(json.dumps(r) + "\n" for r in rows))
