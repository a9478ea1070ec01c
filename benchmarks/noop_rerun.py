"""The rerun of a finished build: no-op (nothing changed) against a forced re-assembly (issue 12, item 4).

N generated sources (one 12-s 160x120 video, hard-linked under N names, served on 127.0.0.1), one
10-s window each, are built once with the CLI. The same command is then run again (the no-op: it must
find the dataset up to date), and once more after removing the assembly records (what every rerun
cost before: the whole dataset assembled again). Each rerun is timed as the whole command, imports
included, as a user runs it.

    python benchmarks/noop_rerun.py --sources 128 --write
"""

from __future__ import annotations

import argparse
import csv
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


def _run(args: list[str]) -> tuple[float, str]:
    began = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "mipkit", *args], capture_output=True, text=True, timeout=3600)
    seconds = time.perf_counter() - began
    if done.returncode:
        raise SystemExit(f"mipkit failed ({done.returncode}): {done.stderr[-2000:]}")
    return seconds, done.stderr + done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shard-size", type=int, default=8)
    parser.add_argument("--write", action="store_true", help="append the figures to docs/benchmarks.md")
    args = parser.parse_args()

    from mipkit.demo.mediaserver import MediaServer
    from mipkit.demo.synthetic_media import make_video, spec_for_index

    load_before = os.getloadavg()[0]
    root = Path(tempfile.mkdtemp(prefix="mipkit-noop-"))
    try:
        media = root / "media"
        media.mkdir()
        make_video(media / "base.mp4", spec_for_index(0, 12.0))
        for i in range(args.sources):
            os.link(media / "base.mp4", media / f"src{i:04d}.mp4")
        with MediaServer(media) as server:
            manifest = root / "m.csv"
            with manifest.open("w", newline="") as handle:
                writer = csv.DictWriter(handle, fieldnames=["url", "start_s", "emotion"])
                writer.writeheader()
                for i in range(args.sources):
                    writer.writerow({"url": server.url(f"src{i:04d}.mp4"), "start_s": 1.0, "emotion": "happy"})
            out = root / "ds"
            command = ["build", "mipnet", "--manifest", str(manifest), "--out", str(out)]
            command += ["--workers", str(args.workers), "--shard-size", str(args.shard_size)]
            first, _ = _run(command)
            noop, said = _run(command)
            if "dataset up to date" not in said:
                raise SystemExit(f"the rerun did not find the dataset up to date:\n{said}")
            for record in ("assembled.json", "assembly.json"):
                (out / "build" / record).unlink(missing_ok=True)
            forced, said = _run(command)
            if "dataset up to date" in said:
                raise SystemExit("the forced re-assembly was skipped")
    finally:
        shutil.rmtree(root, ignore_errors=True)

    load = os.getloadavg()[0]
    body = (
        f"{args.sources} sources x 1 window of 10 s (160x120 H.264 + AAC, 12 s), {args.shard_size} per shard, "
        f"--workers {args.workers}; each figure is the whole `mipkit build mipnet` command (imports included).\n\n"
        "| run | seconds |\n| --- | --- |\n"
        f"| first build | {first:.1f} |\n"
        f"| rerun, nothing changed (no-op: dataset up to date) | {noop:.2f} |\n"
        f"| rerun with the assembly records removed (re-assembles, as every rerun did before) | {forced:.2f} |\n\n"
        f"- load average {load_before:.2f} when the run began, {load:.2f} when it ended (the machine line above is "
        "read at the end; on a shared machine absolute seconds move with the load)\n"
    )
    print(body)
    if args.write:
        append_section("No-op rerun of a finished build (benchmarks/noop_rerun.py)", body)


if __name__ == "__main__":
    main()
