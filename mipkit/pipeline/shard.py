"""Shards: the unit of work, of resume and of distribution.

Layout of one shard under ``OUT/build/shards/NNNNN/``: ``pairs.parquet`` (built samples with their
media bytes), ``status.jsonl`` (one line per requested sample) and ``stats.json``. Each file is
written to a temporary name and moved into place; ``stats.json`` is written last, so its presence
means the shard is complete. A shard folder without it is leftover of a killed run and is redone.
"""

from __future__ import annotations

import json
import os
import shutil
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
from mipkit.core.files import write_atomic
from mipkit.core.paths import BUILD_DIR
from mipkit.core.records import INTERNAL_ERROR, PENDING, Pair, SampleStatus, SourceRequest
from mipkit.pipeline.fetch import one_line
from mipkit.pipeline.parallelism import fetch_threads
from mipkit.pipeline.politeness import HostGate
from mipkit.pipeline.process import build_source, fail_all

PAIRS_FILE = "pairs.parquet"
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
    ]
)


class ShardNotCommitted(RuntimeError):
    """A sample hit a bug of ours: the shard is redone next run rather than committed with a wrong status."""


@dataclass
class ShardTask:
    index: int
    sources: list[SourceRequest]


def shards_root(out_dir: Path) -> Path:
    return Path(out_dir) / BUILD_DIR / "shards"


def shard_dir(out_dir: Path, index: int) -> Path:
    return shards_root(out_dir) / f"{index:05d}"


def is_done(out_dir: Path, index: int) -> bool:
    """Committed and complete: a shard committed with ``pending`` sources (a blocked host) is reopened."""
    stats = shard_dir(out_dir, index) / STATS_FILE
    return stats.is_file() and not json.loads(stats.read_text()).get("counts", {}).get(PENDING)


def _kept_results(folder: Path) -> tuple[pa.Table | None, list[dict], set[str]]:
    """What a shard committed with pending sources keeps: the pairs and statuses of its finished sources."""
    statuses = [json.loads(line) for line in (folder / STATUS_FILE).read_text().splitlines() if line.strip()]
    unfinished = {s["source_id"] for s in statuses if s["status"] == PENDING}
    kept = [s for s in statuses if s["source_id"] not in unfinished]
    table = pq.read_table(folder / PAIRS_FILE, schema=PAIR_SCHEMA)
    unfinished_ids = pa.array(sorted(unfinished), pa.string())
    table = table.filter(pc.invert(pc.is_in(table["source_id"], value_set=unfinished_ids)))
    return table, kept, {s["source_id"] for s in kept}


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
    task: ShardTask, recipe: Recipe, out_dir: Path, on_event: Callable[[dict[str, int]], None] | None = None
) -> dict:
    """Build one shard and commit it; returns its stats. Safe to call again after a kill.

    ``on_event`` receives ``{status: count}`` of each finished source (progress)."""
    out_dir = Path(out_dir)
    folder = shard_dir(out_dir, task.index)
    kept_table, kept_statuses, finished = None, [], set()
    if (folder / STATS_FILE).is_file():
        if is_done(out_dir, task.index):
            return json.loads((folder / STATS_FILE).read_text())
        kept_table, kept_statuses, finished = _kept_results(folder)
    shutil.rmtree(folder, ignore_errors=True)  # partial output of a killed run
    work = folder / "tmp"
    work.mkdir(parents=True)
    began = time.time()
    pairs: list[Pair] = []
    statuses: list[SampleStatus] = [SampleStatus(**s) for s in kept_statuses]
    gate = HostGate(out_dir / BUILD_DIR, recipe.politeness)

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
    tmp = folder / (PAIRS_FILE + ".tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, folder / PAIRS_FILE)
    write_atomic(folder / STATUS_FILE, "".join(json.dumps(s.to_dict()) + "\n" for s in statuses).encode())
    shutil.rmtree(work, ignore_errors=True)
    stats = {
        "shard": task.index,
        "sources": len(task.sources),
        "pairs": len(pairs),
        **summarize(statuses),
        "seconds": round(time.time() - began, 3),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    write_atomic(folder / STATS_FILE, json.dumps(stats, indent=2).encode())  # last: marks the shard done
    return stats
