"""Every requested sample's final status, read back from a build folder (``mipkit status``)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from mipkit.core.errors import MipkitError
from mipkit.core.paths import BUILD_DIR
from mipkit.core.storage import Location, as_location
from mipkit.pipeline.shard import STATS_FILE, STATUS_FILE, done_shard_dirs

MANIFEST_STATUS_FILE = "manifest_status.jsonl"
BUILD_FILE = "build.json"


def build_dir(out_dir: Location | Path | str) -> Location:
    return as_location(out_dir) / BUILD_DIR


def iter_statuses(out_dir: Location | Path | str, done: list[Location] | None = None) -> Iterator[dict]:
    """Statuses of rows rejected while reading the manifest, then of every committed shard."""
    root = build_dir(out_dir)
    if not (root / BUILD_FILE).is_file():
        raise MipkitError(
            f"{as_location(out_dir).display!r} is not a mipkit build folder (no build/{BUILD_FILE}); pass the --out folder of a build"
        )
    files = [root / MANIFEST_STATUS_FILE] + [
        d / STATUS_FILE for d in (done_shard_dirs(out_dir) if done is None else done)
    ]
    for path in files:
        if path.is_file():
            for line in path.read_text().splitlines():
                if line.strip():
                    yield json.loads(line)


def status_report(out_dir: Location | Path | str) -> dict:
    """``{"counts": {...}, "failed": [...], "shards": {"done": d, "total": t}}``."""
    counts: Counter = Counter()
    failed = []
    done = done_shard_dirs(out_dir)
    for record in iter_statuses(out_dir, done):
        counts[record["status"]] += 1
        if record["status"] not in ("ok", "pending"):  # pending is not a failure: the next run fetches it
            entry = {
                "pair_id": record.get("pair_id"),
                "url": record.get("url"),
                "status": record["status"],
                "error": record.get("error", ""),
            }
            if entry["pair_id"] is None:
                entry.pop("pair_id")
            failed.append(entry)
    build = json.loads((build_dir(out_dir) / BUILD_FILE).read_text())
    done_stats = [d / STATS_FILE for d in done]
    # Skips (e.g. YouTube-8M videos that are not music videos) are counted per shard, not listed.
    skipped: Counter = Counter()
    complete = 0  # a shard committed with pending sources (a blocked host) is not done yet
    for path in done_stats:
        stats = json.loads(path.read_text())
        skipped.update(stats.get("skipped", {}))
        complete += not stats.get("counts", {}).get("pending")
    report = {
        "counts": dict(sorted(counts.items())),
        "failed": failed,
        "shards": {"done": complete, "total": build.get("shards", len(done_stats))},
    }
    if skipped:
        report["skipped"] = dict(sorted(skipped.items()))
    return report
