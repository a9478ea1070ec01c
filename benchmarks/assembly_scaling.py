"""Assembly cost against pairs, local folder vs S3 (a moto server on 127.0.0.1).

Committed shards of generated pairs (random bytes of a FLAC's size and a JPEG's size) are written
once per size; ``mipkit.pipeline.assemble.assemble`` is then timed alone. The per-pair constant is
the slope of a least-squares line through (pairs, seconds); linear growth means it stays put.

    python benchmarks/assembly_scaling.py --pairs 1000 4000 16000 --write
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _report import append_section  # noqa: E402

PER_SHARD = 200  # pairs per shard (20 sources x 10 windows)


def write_build(out, pairs: int, audio_bytes: int, image_bytes: int) -> dict[str, str]:
    """Committed shards of ``pairs`` generated pairs under ``out``; returns source id -> split."""
    import pyarrow as pa

    from mipkit.core.ownership import write_marker
    from mipkit.pipeline.shard import (
        PAIR_SCHEMA,
        PAIRS_FILE,
        STATS_FILE,
        STATUS_FILE,
        scratch_dir,
        shard_dir,
        write_parquet,
    )

    rng = random.Random(0)
    out.mkdir()
    write_marker(out, "bench")
    split_of = {}
    blob_audio, blob_image = rng.randbytes(audio_bytes), rng.randbytes(image_bytes)
    scratch = scratch_dir("bench")
    for index in range(0, pairs, PER_SHARD):
        rows = []
        for i in range(index, min(index + PER_SHARD, pairs)):
            source = f"src{i // 10:06d}"
            split_of[source] = rng.choices(["train", "validation", "test"], [8, 1, 1])[0]
            pair_id = f"{source}_{i % 10:08d}"
            rows.append(
                {
                    "pair_id": pair_id,
                    "source_id": source,
                    "source_url": f"http://127.0.0.1/{source}.mp4",
                    "start_s": float(i % 10),
                    "end_s": float(i % 10) + 10,
                    # unique leading bytes: no two clips compress alike
                    "image": {"bytes": i.to_bytes(8, "big") + blob_image, "path": f"{pair_id}.jpg"},
                    "audio": {"bytes": i.to_bytes(8, "big") + blob_audio, "path": f"{pair_id}.flac"},
                    "emotion": "happy",
                    "emotion_source": "manifest",
                    "emotion_score": None,
                    "title": "t",
                    "uploader": "u",
                    "license": "CC0-1.0",
                }
            )
        folder = shard_dir(out, index // PER_SHARD)
        folder.mkdir()
        write_parquet(pa.Table.from_pylist(rows, schema=PAIR_SCHEMA), folder / PAIRS_FILE, scratch)
        (folder / STATUS_FILE).write_text("")
        (folder / STATS_FILE).write_json({"shard": index // PER_SHARD, "pairs": len(rows)})
    shutil.rmtree(scratch, ignore_errors=True)
    return split_of


def time_assembly(out, split_of, workers: int) -> float:
    from conftest import small_recipe

    from mipkit.config.taxonomy import load_taxonomy
    from mipkit.pipeline.assemble import assemble

    recipe = small_recipe()
    began = time.perf_counter()
    rows, _ = assemble(out, recipe, load_taxonomy(recipe.taxonomy), split_of, workers=workers)
    seconds = time.perf_counter() - began
    assert sum(rows.values()) == 10 * len(split_of)  # every pair assembled once
    return seconds


def slope(points: list[tuple[int, float]]) -> float:
    n = len(points)
    mx, my = sum(p for p, _ in points) / n, sum(s for _, s in points) / n
    var = sum((p - mx) ** 2 for p, _ in points) or 1
    return sum((p - mx) * (s - my) for p, s in points) / var


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, nargs="+", default=[1000, 4000, 16000])
    parser.add_argument("--audio-kb", type=int, default=320, help="bytes per clip (a 10-s 32 kHz mono FLAC: ~320 KB)")
    parser.add_argument("--image-kb", type=int, default=40)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--stores", nargs="+", default=["local", "s3"], choices=["local", "s3"])
    parser.add_argument("--write", action="store_true", help="append the figures to docs/benchmarks.md")
    args = parser.parse_args()

    from mipkit.core.storage import Location

    results: dict[str, list[tuple[int, float]]] = {}
    root = Path(tempfile.mkdtemp(prefix="mipkit-bench-"))
    try:
        for store in args.stores:
            context = None
            if store == "s3":
                from helpers.object_store import make_bucket, moto_s3_server

                context = moto_s3_server()
                context.__enter__()
                make_bucket("bench")
            # The first size is untimed: imports and connections warm up.
            for round_index, pairs in enumerate([PER_SHARD, *args.pairs]):
                warmup = round_index == 0
                out = Location(str(root / f"{pairs}")) if store == "local" else Location(f"s3://bench/{pairs}")
                split_of = write_build(out, pairs, args.audio_kb * 1024, args.image_kb * 1024)
                seconds = time_assembly(out, split_of, args.workers)
                if not warmup:
                    results.setdefault(store, []).append((pairs, seconds))
                print(json.dumps({"store": store, "pairs": pairs, "seconds": round(seconds, 2)}), flush=True)
                out.rmtree()
            if context is not None:
                context.__exit__(None, None, None)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    lines = [
        f"Generated committed shards ({PER_SHARD} pairs each; audio {args.audio_kb} KB + image {args.image_kb} KB "
        f"of random bytes per pair), `assemble()` timed alone, workers {args.workers}. The S3 store is moto's "
        "server on 127.0.0.1 (in-memory, one process), so its figures measure the protocol path, not a real bucket.",
        "",
        "| store | pairs | seconds | ms per pair |",
        "| --- | --- | --- | --- |",
    ]
    for store, points in results.items():
        for pairs, seconds in points:
            lines.append(f"| {store} | {pairs} | {seconds:.1f} | {1000 * seconds / pairs:.2f} |")
    lines.append("")
    for store, points in results.items():
        lines.append(f"- {store}: per-pair constant (least-squares slope) {1000 * slope(points):.2f} ms per pair")
    body = "\n".join(lines)
    print(body)
    if args.write:
        append_section("Assembly against pairs, local vs S3 (benchmarks/assembly_scaling.py)", body)


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
