"""Bytes per request of one source: the plain-ffmpeg floor against mipkit's fast path, from the host's log.

The media is what ``build_throughput.py`` generates; the host is ``FaultServer`` (no faults), whose log
has every request's method, Range and body bytes sent. Prints one line per request, for the
attribution in docs/benchmarks.md ("Build throughput side by side": where the bytes go). Run from the
repository root:

    python benchmarks/window_bytes.py --size 854x480 --starts 20
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from build_throughput import floor_window, make_sources  # noqa: E402

from mipkit.config.recipe import load_recipe  # noqa: E402
from mipkit.core.records import SourceRequest, Window  # noqa: E402
from mipkit.demo.faultserver import FaultServer  # noqa: E402
from mipkit.pipeline.process import build_source  # noqa: E402


def show(label: str, records, size: int) -> int:
    total = sum(r.body_bytes for r in records)
    print(f"{label}: {total / 1e6:.3f} MB in {len(records)} requests (file {size / 1e6:.3f} MB)")
    for r in records:
        print(f"  {r.method} {r.range or '(no Range)':24} {r.status} {r.body_bytes:>9} B  {r.user_agent[:12]}")
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="160x120")
    parser.add_argument("--source-seconds", type=float, default=60.0)
    parser.add_argument("--starts", default="20", help="window starts, comma-separated")
    args = parser.parse_args()
    starts = [float(s) for s in args.starts.split(",")]
    work = Path(tempfile.mkdtemp(prefix="mipkit-bytes-"))
    try:
        media = work / "media"
        media.mkdir()
        name = make_sources(media, args.size, 1, args.source_seconds, 1)[0]
        size = (media / name).stat().st_size
        with FaultServer(media) as server:
            floor_url = server.url(name, fresh=True)
            for k, start in enumerate(starts):
                floor_window(floor_url, start, work / f"floor{k}")
            ours_url = server.url(name, fresh=True)
            windows = [Window(row=k, start_s=s, emotion="happy") for k, s in enumerate(starts)]
            _, statuses = build_source(SourceRequest("s", ours_url, windows), load_recipe("mipnet"), work / "out")
            floor = show("floor", server.requests_for(floor_url), size)
            ours = show(f"mipkit ({', '.join(s.status for s in statuses)})", server.requests_for(ours_url), size)
        print(f"bytes ratio {ours / floor:.2f}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
