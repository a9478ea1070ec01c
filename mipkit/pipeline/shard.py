"""Shards: the unit of work, of resume and of distribution.

Layout of one shard under ``OUT/build/shards/NNNNN/``: ``pairs.parquet`` (built samples with their
media bytes), ``status.jsonl`` (one line per requested sample) and ``stats.json``. ``OUT`` may be a
local folder or an object-store URL: the worker that built a shard writes it there itself. Each file
appears whole (temporary name + rename locally, one PUT on a store); ``stats.json`` is written last,
so its presence means the shard is complete. A shard folder without it is leftover of a killed run
and is redone. Scratch files (ffmpeg output) stay on the worker's local disk.
"""

from __future__ import annotations

import json
import shutil
import socket
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mipkit.config.recipe import Recipe
from mipkit.core.paths import BUILD_DIR
from mipkit.core.records import INTERNAL_ERROR, PENDING, TRANSIENT_STATUSES, Pair, SampleStatus, SourceRequest
from mipkit.core.storage import Location, as_location, local_state_dir
from mipkit.pipeline.fetch import one_line
from mipkit.pipeline.parallelism import fetch_threads
from mipkit.pipeline.politeness import HostGate, gate_home
from mipkit.pipeline.process import build_source, fail_all

PAIRS_FILE = "pairs.parquet"
PRIVATE_DIR = "private"  # OUT/build/private: scratch files and the private cookies copy of a running build
REOPENED_FILE = "reopened.json"  # the stats of a shard --retry-failed un-committed: it keeps what ended for good
STATUS_FILE = "status.jsonl"
STATS_FILE = "stats.json"

_MEDIA = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
PAIR_SCHEMA = pa.schema(
    [
        ("pair_id", pa.string()),
        ("source_id", pa.string()),
        ("source_url", pa.string()),
        ("start_s", pa.float64()),
        ("end_s", pa.float64()),
        ("image", _MEDIA),
        ("audio", _MEDIA),
        ("emotion", pa.string()),
        ("emotion_source", pa.string()),
        ("emotion_score", pa.float64()),
        ("title", pa.string()),
        ("uploader", pa.string()),
        ("license", pa.string()),
        ("fetch_strategy", pa.string()),  # kept in the shard (provenance), not a dataset column
    ]
)


class ShardNotCommitted(RuntimeError):
    """A sample hit a bug of ours: the shard is redone next run rather than committed with a wrong status."""


@dataclass
class ShardTask:
    index: int
    sources: list[SourceRequest]


def shards_root(out_dir: Location | Path | str) -> Location:
    return as_location(out_dir) / BUILD_DIR / "shards"


def shard_dir(out_dir: Location | Path | str, index: int) -> Location:
    return shards_root(out_dir) / f"{index:05d}"


def done_shard_dirs(out_dir: Location | Path | str) -> list[Location]:
    """The committed shard folders (those with ``stats.json``), in order; one listing, not one call each."""
    root = shards_root(out_dir)
    return sorted(stats.parent for stats in root.glob(f"[0-9]*/{STATS_FILE}"))


def _has_pending(stats: Location) -> bool:
    return bool(json.loads(stats.read_text()).get("counts", {}).get(PENDING))


def complete_indices(out_dir: Location | Path | str) -> set[int]:
    """Committed shards without ``pending`` sources: one committed while its host was blocked runs again."""
    return {int(folder.name) for folder in done_shard_dirs(out_dir) if not _has_pending(folder / STATS_FILE)}


def is_done(out_dir: Location | Path | str, index: int) -> bool:
    stats = shard_dir(out_dir, index) / STATS_FILE
    return stats.is_file() and not _has_pending(stats)


def _kept_results(folder: Location, redo_statuses: frozenset[str]) -> tuple[pa.Table, list[dict], set[str]]:
    """What a reopened shard keeps: the pairs and statuses of every source without a ``redo_statuses`` sample.

    A shard reopens when it was committed with ``pending`` sources (a blocked host: only those run
    again) or when ``--retry-failed`` un-committed it (its pending and transient failures run again)."""
    statuses = [json.loads(line) for line in (folder / STATUS_FILE).read_text().splitlines() if line.strip()]
    redo = {s["source_id"] for s in statuses if s["status"] in redo_statuses}
    kept = [s for s in statuses if s["source_id"] not in redo]
    with (folder / PAIRS_FILE).open("rb") as handle:
        table = pq.read_table(handle, schema=PAIR_SCHEMA)
    table = table.filter(pc.invert(pc.is_in(table["source_id"], value_set=pa.array(sorted(redo), pa.string()))))
    return table, kept, {s["source_id"] for s in kept}


def private_area(out_dir: Location | Path | str) -> Path:
    """Where workers keep the scratch files of a build and yt-dlp's private cookies copy: inside the locked
    build folder for a local ``OUT``, else in the user's cache; never a shared temp folder. The driver
    empties it at the start and the end of every run, so a killed run leaves no cookie copy behind."""
    where = as_location(out_dir)
    return where.local_path / BUILD_DIR / PRIVATE_DIR if where.is_local else local_state_dir(where, PRIVATE_DIR)


def scratch_dir(label: str, out_dir: Location | Path | str | None = None) -> Path:
    """A folder (mode 0700) on this worker's local disk for ffmpeg's files, never on the output store:
    in ``out_dir``'s private area when given, else in the system temp folder (no secrets go there)."""
    if out_dir is None:
        return Path(tempfile.mkdtemp(prefix=f"mipkit-{label}-"))
    area = private_area(out_dir)
    area.mkdir(parents=True, exist_ok=True, mode=0o700)
    return Path(tempfile.mkdtemp(prefix=f"{label}-", dir=area))


def worker_identity() -> dict:
    """Where a shard was built: host name, and the Ray node id when running as a Ray task."""
    where = {"host": socket.gethostname()}
    ray = sys.modules.get("ray")
    if ray is not None and ray.is_initialized():
        where["ray_node_id"] = ray.get_runtime_context().get_node_id()
    return where


def write_parquet(table: pa.Table, target: Location, scratch: Path) -> None:
    """Write a Parquet file to a local scratch name, then move it to ``target`` in one piece."""
    tmp = scratch / (target.name + ".part")
    pq.write_table(table, tmp, compression="zstd")
    target.upload(tmp)
    tmp.unlink(missing_ok=True)


def plan_shards(sources: list[SourceRequest], per_shard: int) -> list[ShardTask]:
    return [
        ShardTask(index=i // per_shard, sources=sources[i : i + per_shard]) for i in range(0, len(sources), per_shard)
    ]


def _pairs_table(pairs: list[Pair]) -> pa.Table:
    rows = [
        {
            "pair_id": p.pair_id,
            "source_id": p.source_id,
            "source_url": p.source_url,
            "start_s": p.start_s,
            "end_s": p.end_s,
            "image": None if p.image_jpeg is None else {"bytes": p.image_jpeg, "path": f"{p.pair_id}.jpg"},
            "audio": {"bytes": p.audio_flac, "path": f"{p.pair_id}.flac"},
            "emotion": p.emotion,
            "emotion_source": p.emotion_source,
            "emotion_score": p.emotion_score,
            "title": p.title,
            "uploader": p.uploader,
            "license": p.license,
            "fetch_strategy": p.fetch_strategy,
        }
        for p in sorted(pairs, key=lambda p: p.pair_id)
    ]
    return pa.Table.from_pylist(rows, schema=PAIR_SCHEMA)


def summarize(statuses: list[SampleStatus]) -> dict:
    counts = Counter(s.status for s in statuses)
    errors = Counter(s.error.split(": ", 1)[-1][:120] for s in statuses if s.status != "ok")
    return {
        "requested": len(statuses),
        "counts": dict(sorted(counts.items())),
        "top_errors": [{"error": e, "count": c} for e, c in errors.most_common(5)],
    }


def run_shard(
    task: ShardTask,
    recipe: Recipe,
    out_dir: Location | Path,
    on_event: Callable[[dict[str, int]], None] | None = None,
) -> dict:
    """Build one shard and commit it; returns its stats. Safe to call again after a kill.

    ``on_event`` receives ``{status: count}`` of each finished source (progress)."""
    folder = shard_dir(out_dir, task.index)
    kept_table, kept_statuses, finished = None, [], set()
    committed = (folder / STATS_FILE).is_file()
    if committed and is_done(out_dir, task.index):
        return json.loads((folder / STATS_FILE).read_text())
    if committed:  # committed while its host was blocked: only the pending sources run again
        kept_table, kept_statuses, finished = _kept_results(folder, frozenset({PENDING}))
    elif (folder / REOPENED_FILE).is_file():  # --retry-failed: its pending and transient failures run again
        kept_table, kept_statuses, finished = _kept_results(folder, frozenset({PENDING, *TRANSIENT_STATUSES}))
    folder.rmtree()  # partial output of a killed run (what is kept was read above)
    folder.mkdir()
    work = scratch_dir(f"shard{task.index}", out_dir)  # holds the private cookies copy: never in /tmp
    began = time.time()
    pairs: list[Pair] = []
    statuses: list[SampleStatus] = [SampleStatus(**s) for s in kept_statuses]
    gate = HostGate(gate_home(out_dir), recipe.politeness)

    def one(request: SourceRequest):
        try:
            return build_source(request, recipe, work, gate)
        except Exception as exc:  # noqa: BLE001 - a bug must cost one source its samples, recorded, not the shard
            reason = f"internal error ({type(exc).__name__}: {one_line(str(exc))}); please report it"
            return [], fail_all(request, INTERNAL_ERROR, reason, recipe.clip.clips_per_source)

    pool = ThreadPoolExecutor(
        max_workers=fetch_threads(recipe.shards.fetch_threads), thread_name_prefix=f"shard{task.index}"
    )
    try:
        for source_pairs, source_statuses in pool.map(one, [s for s in task.sources if s.source_id not in finished]):
            pairs.extend(source_pairs)
            statuses.extend(source_statuses)
            if on_event is not None:
                on_event(dict(Counter(s.status for s in source_statuses)))
    except BaseException:
        # Ctrl-C: queued sources must not go on fetching; the uncommitted shard is redone next run.
        gate.close()
        pool.shutdown(wait=False, cancel_futures=True)
        shutil.rmtree(work, ignore_errors=True)
        raise
    pool.shutdown()
    internal = [s for s in statuses if s.status == INTERNAL_ERROR]
    if internal:
        shutil.rmtree(work, ignore_errors=True)
        raise ShardNotCommitted(
            f"{len(internal)} sample(s) hit an internal error, so the shard is not committed: {internal[0].error}"
        )

    table = _pairs_table(pairs)
    if kept_table is not None:
        table = pa.concat_tables([kept_table, table]).sort_by("pair_id")
    try:
        write_parquet(table, folder / PAIRS_FILE, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    (folder / STATUS_FILE).write_text("".join(json.dumps(s.to_dict()) + "\n" for s in statuses))
    stats = {
        "shard": task.index,
        "sources": len(task.sources),
        "pairs": table.num_rows,
        **summarize(statuses),
        "seconds": round(time.time() - began, 3),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "built_on": worker_identity(),
    }
    (folder / STATS_FILE).write_json(stats)  # last: marks the shard done
    return stats
