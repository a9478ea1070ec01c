"""Build throughput side by side: mipkit against the plain-ffmpeg floor, on the same served media.

The floor does exactly the needed work and nothing else, per window:
``ffmpeg -ss S -t 10 -i URL -vn -ac 1 -ar 32000 out.flac`` plus one frame grab at the window middle
(``-vn``: without it ffmpeg also encodes the video into the FLAC as PNG cover frames).
Both run with the same parallelism against one 127.0.0.1 server process, which counts the bytes it
sends. CPU is ``resource.getrusage`` of the children (ffmpeg) plus, for mipkit, its own process
(yt-dlp, assembly). Run from the repository root:

    python benchmarks/build_throughput.py --sizes 160x120 854x480 --layouts 32x1 8x6 [--write]
    python benchmarks/build_throughput.py --strategies [--write]   # fetch.strategy: bytes per pair, wall time
"""

from __future__ import annotations

import argparse
import csv
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import append_section  # noqa: E402

from mipkit.config.recipe import load_recipe  # noqa: E402
from mipkit.demo.synthetic_media import make_video, spec_for_index  # noqa: E402
from mipkit.kinds.pairs import BuildOptions, build  # noqa: E402

CLIP_SECONDS = 10.0
# A served media root answers "bytes" on stdin with its byte counter (the server runs in its own process).
_SERVER = """
import sys
from mipkit.demo.mediaserver import MediaServer
server = MediaServer(sys.argv[1]).start()
print(server.base_url, flush=True)
for line in sys.stdin:
    print(server.bytes_sent, flush=True)
"""


class ServedMedia:
    def __init__(self, root: Path):
        self.process = subprocess.Popen(
            [sys.executable, "-c", _SERVER, str(root)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.base_url = self.process.stdout.readline().strip()

    def bytes_sent(self) -> int:
        self.process.stdin.write("bytes\n")
        self.process.stdin.flush()
        return int(self.process.stdout.readline())

    def close(self) -> None:
        self.process.kill()
        self.process.wait()


def cpu_seconds() -> tuple[float, float]:
    """(children, self) user+system CPU seconds so far."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = resource.getrusage(resource.RUSAGE_SELF)
    return children.ru_utime + children.ru_stime, own.ru_utime + own.ru_stime


def window_starts(count: int, source_seconds: float) -> list[float]:
    if count == 1:
        return [20.0]
    step = (source_seconds - CLIP_SECONDS - 2.0) / count
    return [round(1.0 + step * k, 3) for k in range(count)]


def floor_window(url: str, start: float, out: Path) -> None:
    """The least work a pair needs: one accurate-seek decode of 10 s, one frame grab."""
    base = ["ffmpeg", "-nostdin", "-v", "error", "-y"]
    subprocess.run(
        base
        + [
            "-ss",
            str(start),
            "-t",
            str(CLIP_SECONDS),
            "-i",
            url,
            "-vn",
            "-ac",
            "1",
            "-ar",
            "32000",
            str(out.with_suffix(".flac")),
        ],
        check=True,
    )
    subprocess.run(
        base + ["-ss", str(start + CLIP_SECONDS / 2), "-i", url, "-frames:v", "1", str(out.with_suffix(".jpg"))],
        check=True,
    )


def measure(run) -> dict:
    children, own = cpu_seconds()
    began = time.perf_counter()
    result = run()
    wall = time.perf_counter() - began
    children_after, own_after = cpu_seconds()
    return {"wall": wall, "cpu_children": children_after - children, "cpu_self": own_after - own, "result": result}


def make_sources(media: Path, size: str, count: int, seconds: float, distinct: int) -> list[str]:
    """``count`` served names over ``distinct`` generated files (generating a 480p source takes seconds)."""
    names = []
    for i in range(count):
        name = f"{size}-s{i:04d}.mp4"
        original = media / f"{size}-s{i % distinct:04d}.mp4"
        if i < distinct:
            big = size != "160x120"
            make_video(
                original,
                spec_for_index(i, seconds),
                size=size,
                fps=25 if big else 10,
                gop=50 if big else 20,
                noise=10 if big else 0,
                video_kbps=1000 if big else 0,
            )
        else:
            shutil.copyfile(original, media / name)
        names.append(name)
    return names


def write_manifest(path: Path, urls: list[str], starts: list[float]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["url", "start_s", "emotion"])
        for url in urls:
            for start in starts:
                writer.writerow([url, start, "happy"])
    return path


def run_case(
    work: Path,
    server: ServedMedia,
    names: list[str],
    windows: int,
    source_seconds: float,
    parallel: int,
    recipe_overrides: dict,
) -> dict:
    starts = window_starts(windows, source_seconds)
    urls = [f"{server.base_url}/{name}" for name in names]
    jobs = [(url, start) for url in urls for start in starts]
    floor_dir = work / "floor"
    floor_dir.mkdir(parents=True, exist_ok=True)
    before = server.bytes_sent()

    def floor():
        with ThreadPoolExecutor(parallel) as pool:
            list(pool.map(lambda job: floor_window(job[0], job[1], floor_dir / f"w{jobs.index(job):04d}"), jobs))
        return len(jobs)

    floor_run = measure(floor)
    floor_run["bytes"] = server.bytes_sent() - before
    shutil.rmtree(floor_dir)

    manifest = write_manifest(work / "m.csv", urls, starts)
    overrides = {"shards.sources_per_shard": len(names), "shards.fetch_threads": parallel, **recipe_overrides}
    recipe = load_recipe("mipnet").with_overrides(overrides)
    out = work / "out"
    before = server.bytes_sent()
    mipkit_run = measure(lambda: build(BuildOptions(manifest=manifest, out=out, recipe=recipe, workers=1)))
    mipkit_run["bytes"] = server.bytes_sent() - before
    mipkit_run["result"] = mipkit_run["result"]["counts"].get("ok", 0)
    shutil.rmtree(out)
    return {"floor": floor_run, "mipkit": mipkit_run, "windows": len(jobs)}


def table_row(size: str, layout: str, case: dict) -> str:
    floor, ours = case["floor"], case["mipkit"]
    floor_cpu = floor["cpu_children"] + floor["cpu_self"]
    our_cpu = ours["cpu_children"] + ours["cpu_self"]
    return (
        f"| {size} | {layout} | {ours['result']}/{case['windows']} | {floor['wall']:.2f} | {ours['wall']:.2f} | "
        f"**{ours['wall'] / floor['wall']:.2f}x** | {floor_cpu:.2f} | {ours['cpu_children']:.2f} + {ours['cpu_self']:.2f} | "
        f"**{our_cpu / floor_cpu:.2f}x** | {floor['bytes'] / 1e6:.2f} | {ours['bytes'] / 1e6:.2f} | "
        f"{ours['bytes'] / floor['bytes']:.2f}x |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", nargs="+", default=["160x120", "854x480"])
    parser.add_argument("--layouts", nargs="+", default=["32x1", "8x6"], help="SOURCESxWINDOWS")
    parser.add_argument("--source-seconds", type=float, default=60.0)
    parser.add_argument(
        "--parallel", type=int, default=4, help="concurrent jobs on both sides: floor windows, mipkit sources in flight"
    )
    parser.add_argument("--distinct", type=int, default=4, help="distinct generated files behind the served names")
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="recipe overrides, e.g. ytdlp.force_keyframes_at_cuts=true",
    )
    parser.add_argument("--label", default="", help="what this run measures (goes into the report)")
    parser.add_argument("--write", action="store_true", help="append the results to docs/benchmarks.md")
    parser.add_argument(
        "--strategies",
        action="store_true",
        help="instead: bytes per pair and wall time of fetch.strategy sections / streams / auto (benchmarks/_strategies.py)",
    )
    parser.add_argument("--strategy-windows", nargs="+", type=int, default=[1, 3, 6], help="--strategies: windows")
    parser.add_argument(
        "--throttled-windows", nargs="+", type=int, default=[1, 3, 6], help="--strategies: windows, throttled host"
    )
    parser.add_argument("--strategy-layouts", nargs="+", default=["dash", "muxed"], help="--strategies: dash, muxed")
    args = parser.parse_args()
    if args.strategies:
        run_strategies(args)
        return
    overrides = {}
    for item in args.set:
        key, _, value = item.partition("=")
        overrides[key] = {"true": True, "false": False}.get(value.lower(), value)
    parallel = args.parallel

    work = Path(tempfile.mkdtemp(prefix="mipkit-bench-"))
    rows = []
    try:
        media = work / "media"
        media.mkdir()
        layouts = [tuple(int(x) for x in layout.split("x")) for layout in args.layouts]
        most = max(sources for sources, _ in layouts)
        server = ServedMedia(media)
        try:
            for size in args.sizes:
                print(f"generating {size} sources ...", flush=True)
                names = make_sources(media, size, most, args.source_seconds, args.distinct)
                for sources, windows in layouts:
                    case = run_case(
                        work / f"{size}-{sources}x{windows}",
                        server,
                        names[:sources],
                        windows,
                        args.source_seconds,
                        parallel,
                        overrides,
                    )
                    rows.append(table_row(size, f"{sources}x{windows}", case))
                    print(rows[-1], flush=True)
        finally:
            server.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    lines = [
        f"{args.label + ': ' if args.label else ''}generated sources of {args.source_seconds:g} s (160x120: H.264 10 fps; "
        "854x480: H.264 25 fps with grain at about 1 Mbit/s; AAC 128k), served by one 127.0.0.1 process; "
        f"{parallel} concurrent jobs on both sides; recipe overrides {overrides or 'none'}. "
        "Floor per window: `ffmpeg -ss S -t 10 -i URL -vn -ac 1 -ar 32000 out.flac` + `ffmpeg -ss S+5 -i URL -frames:v 1 out.jpg` "
        "(`-vn`: without it ffmpeg also encodes the video into the FLAC as PNG cover frames). "
        "CPU = children (ffmpeg) + mipkit's own process (yt-dlp, assembly).",
        "",
        "| picture | sources x windows | pairs | floor wall (s) | mipkit wall (s) | wall ratio | floor CPU (s) | "
        "mipkit CPU children + own (s) | CPU ratio | floor MB | mipkit MB | bytes ratio |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        *rows,
        "",
        f"Load average at the end: {os.getloadavg()[0]:.2f} (the machine is shared).",
    ]
    report = "\n".join(lines)
    print(report)
    if args.write:
        print(f"appended to {append_section('Build throughput side by side (benchmarks/build_throughput.py)', report)}")


def run_strategies(args) -> None:
    """The --strategies mode (``_strategies``): its own table, its own section of docs/benchmarks.md."""
    import _strategies

    report = _strategies.report(_strategies.run(args.strategy_windows, args.throttled_windows, args.strategy_layouts))
    print(report)
    if args.write:
        print(f"appended to {append_section('Fetch strategy (benchmarks/build_throughput.py --strategies)', report)}")


if __name__ == "__main__":
    main()
