"""Build throughput: clips/s, build time against pure ffmpeg decode, bytes fetched per window.

Generates N local sources, serves them on 127.0.0.1, and builds one 10-s window per source through
the real path (yt-dlp sections, ffmpeg, HF datasets). Run from the repository root:

    python benchmarks/build_throughput.py --sources 16 --workers 1 2 [--write]
"""

from __future__ import annotations

import argparse
import csv
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import append_section  # noqa: E402

from mipkit.config.recipe import load_recipe  # noqa: E402
from mipkit.demo.mediaserver import MediaServer  # noqa: E402
from mipkit.demo.synthetic_media import make_video, spec_for_index  # noqa: E402
from mipkit.pipeline.driver import BuildOptions, build  # noqa: E402


def decode_seconds(paths: list[Path], start_s: float | None = None) -> float:
    """Wall time of ffmpeg decoding every file (or only the 10-s window) to nothing."""
    began = time.perf_counter()
    for path in paths:
        cmd = ["ffmpeg", "-nostdin", "-v", "error"]
        if start_s is not None:
            cmd += ["-ss", str(start_s), "-t", "10"]
        subprocess.run(cmd + ["-i", str(path), "-f", "null", "-"], check=True)
    return time.perf_counter() - began


def write_manifest(path: Path, urls: list[str], start_s: float) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["url", "start_s", "emotion"])
        for url in urls:
            writer.writerow([url, start_s, "happy"])
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=16)
    parser.add_argument("--source-seconds", type=float, default=60.0)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--fetch-threads", type=int, default=4)
    parser.add_argument(
        "--long-minutes", type=float, default=10.0, help="length of the source used for bytes-per-window"
    )
    parser.add_argument(
        "--no-force-keyframes", action="store_true", help="stream-copy sections (exact for mp4 edit lists only)"
    )
    parser.add_argument("--write", action="store_true", help="append the results to docs/benchmarks.md")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="mipkit-bench-"))
    try:
        media = work / "media"
        print(
            f"generating {args.sources} sources of {args.source_seconds:g} s and one of {args.long_minutes:g} min ...",
            flush=True,
        )
        paths = [
            make_video(media / f"s{i:04d}.mp4", spec_for_index(i, args.source_seconds)) for i in range(args.sources)
        ]
        long_path = make_video(media / "long.mp4", spec_for_index(10_000, args.long_minutes * 60))
        start_s = 20.0
        full_decode = decode_seconds(paths)
        window_decode = decode_seconds(paths, start_s)

        rows = []
        # Throughput: the server runs in its own process, as a remote host would (no shared GIL).
        server_process = subprocess.Popen(
            [sys.executable, "-m", "mipkit.demo.mediaserver", str(media)], stdout=subprocess.PIPE, text=True
        )
        try:
            base_url = server_process.stdout.readline().strip()
            manifest = write_manifest(work / "m.csv", [f"{base_url}/{p.name}" for p in paths], start_s)
            for workers in args.workers:
                recipe = load_recipe("mipnet").with_overrides(
                    {
                        "shards.sources_per_shard": max(1, args.sources // (2 * workers)),
                        "shards.fetch_threads": args.fetch_threads,
                        "ytdlp.force_keyframes_at_cuts": not args.no_force_keyframes,
                    }
                )
                out = work / f"out{workers}"
                began = time.perf_counter()
                summary = build(BuildOptions(manifest=manifest, out=out, recipe=recipe, workers=workers))
                seconds = time.perf_counter() - began
                built = summary["counts"].get("ok", 0)
                rows.append((workers, built, seconds))
        finally:
            server_process.kill()
        # Bytes: an in-process server counts what it sent.
        with MediaServer(media) as server:
            long_manifest = write_manifest(work / "long.csv", [server.url("long.mp4")], args.long_minutes * 30)
            before = server.bytes_sent
            build(BuildOptions(manifest=long_manifest, out=work / "long", recipe=load_recipe("mipnet"), workers=1))
            window_bytes = server.bytes_sent - before
        whole_bytes = long_path.stat().st_size

        lines = [
            f"{args.sources} generated sources of {args.source_seconds:g} s (160x120 H.264 10 fps + AAC), one 10-s window each, "
            f"fetch threads per shard = {args.fetch_threads}, force_keyframes_at_cuts = {not args.no_force_keyframes}. Pure decode with `ffmpeg -i SRC -f null -`: whole files "
            f"{full_decode:.2f} s, the 10-s windows only {window_decode:.2f} s.",
            "",
            "| workers | pairs built | build time (s) | clips/s | build / whole-file decode | build / window decode |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for workers, built, seconds in rows:
            lines.append(
                f"| {workers} | {built} | {seconds:.2f} | {built / seconds:.2f} | {seconds / full_decode:.1f}x | {seconds / window_decode:.1f}x |"
            )
        lines += [
            "",
            f"Bytes fetched for one 10-s window of a {args.long_minutes:g}-minute source: {window_bytes / 1e6:.2f} MB "
            f"of {whole_bytes / 1e6:.2f} MB for the whole file ({100 * window_bytes / whole_bytes:.1f} %; counted by the "
            "127.0.0.1 server, metadata probe included).",
        ]
        report = "\n".join(lines)
        print(report)
        if args.write:
            print(f"appended to {append_section('Build throughput (benchmarks/build_throughput.py)', report)}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
