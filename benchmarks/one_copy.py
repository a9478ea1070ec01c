"""One copy of the media (issue 12, item 5): bytes under OUT and the cost of the drop and restore steps.

N generated sources (distinct 12-s 160x120 videos: identical ones would let Parquet's dictionary
encoding store their clips once, hiding the second copy), served on 127.0.0.1, one 10-s window each, are built twice with the CLI: as by default (shards drop the media the dataset
holds) and with --keep-shard-media (both copies, as before). For each: the bytes under OUT, the
seconds of the drop step (summary.json ``seconds_settle``), a no-op rerun, and a rerun after a
model label for one pair (a re-assembly: one copy first puts the media back into the shards).

    python benchmarks/one_copy.py --sources 32 --write
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _report import append_section  # noqa: E402


def _run(args: list[str]) -> float:
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "mipkit", *args], capture_output=True, text=True, timeout=3600)
    if done.returncode:
        raise SystemExit(f"mipkit failed ({done.returncode}): {done.stderr[-2000:]}")
    return time.perf_counter() - began


def _bytes(paths) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file())


def _measure(command: list[str], out: Path) -> dict:
    from datasets import load_from_disk

    from mipkit.pipeline.assemble import write_model_labels

    first = _run(command)
    settle = json.loads((out / "build" / "summary.json").read_text()).get("seconds_settle", 0.0)
    sizes = {
        "total": _bytes(out.rglob("*")),
        "dataset": _bytes(out.glob("*/*.arrow")),
        "shards": _bytes(out.glob("build/shards/*/pairs.parquet")),
    }
    noop = _run(command)
    pair_id = load_from_disk(str(out / "train"))["pair_id"][0]
    label = {"pair_id": pair_id, "emotion": "sad", "emotion_score": 0.9, "emotion_source": "bench", "dropped": False}
    write_model_labels(out / "build", [label])
    relabel = _run(command)
    relabel_settle = json.loads((out / "build" / "summary.json").read_text()).get("seconds_settle", 0.0)
    return {
        "first": first,
        "settle": settle,
        "noop": noop,
        "relabel": relabel,
        "relabel_settle": relabel_settle,
        **sizes,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shard-size", type=int, default=8)
    parser.add_argument("--write", action="store_true", help="append the figures to docs/benchmarks.md")
    args = parser.parse_args()

    from mipkit.demo.mediaserver import MediaServer
    from mipkit.demo.synthetic_media import make_video, spec_for_index

    load_before = os.getloadavg()[0]
    root = Path(tempfile.mkdtemp(prefix="mipkit-onecopy-"))
    try:
        media = root / "media"
        media.mkdir()
        for i in range(args.sources):
            make_video(media / f"src{i:04d}.mp4", spec_for_index(i, 12.0))
        with MediaServer(media) as server:
            manifest = root / "m.csv"
            with manifest.open("w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=["url", "start_s", "emotion"])
                writer.writeheader()
                for i in range(args.sources):
                    writer.writerow({"url": server.url(f"src{i:04d}.mp4"), "start_s": 1.0, "emotion": ""})
            results = {}
            for mode, flags in (("one copy (default)", []), ("--keep-shard-media", ["--keep-shard-media"])):
                out = root / mode.split()[0].strip("-")
                command = ["build", "mipnet", "--manifest", str(manifest), "--out", str(out), *flags]
                command += ["--workers", str(args.workers), "--shard-size", str(args.shard_size)]
                results[mode] = _measure(command, out)
    finally:
        shutil.rmtree(root, ignore_errors=True)

    load = os.getloadavg()[0]
    mib = 1024 * 1024
    rows = "".join(
        f"| {mode} | {r['total'] / mib:.2f} | {r['dataset'] / mib:.2f} | {r['shards'] / mib:.3f} | {r['first']:.1f} "
        f"| {r['settle']:.2f} | {r['noop']:.2f} | {r['relabel']:.2f} |\n"
        for mode, r in results.items()
    )
    body = (
        f"{args.sources} distinct sources x 1 window of 10 s (160x120 H.264 + AAC, 12 s), {args.shard_size} per shard, "
        f"--workers {args.workers}, local --out; each run is the whole `mipkit build mipnet` command (imports included).\n\n"
        "| mode | MiB under OUT | MiB dataset (Arrow) | MiB shards (pairs.parquet) | first build s | drop step s "
        "| no-op rerun s | rerun after a relabel s |\n| --- | --- | --- | --- | --- | --- | --- | --- |\n"
        f"{rows}\n"
        f"- the relabel rerun of one copy puts the media back into the shards, assembles, and drops them again "
        f"(its drop step: {results['one copy (default)']['relabel_settle']:.2f} s)\n"
        f"- load average {load_before:.2f} when the run began, {load:.2f} when it ended; the machine is shared, "
        "so absolute seconds move with the load\n"
    )
    print(body)
    if args.write:
        append_section("One copy of the media (benchmarks/one_copy.py)", body)


if __name__ == "__main__":
    main()
