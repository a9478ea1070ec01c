"""``build_throughput.py --strategies``: bytes fetched per pair and wall time of each fetch strategy.

One generated 10-minute 480p source (cached in the system temp folder), offered two ways on a fault
server on 127.0.0.1: as one muxed mp4 (a direct link) and, like YouTube, as separate audio-only and
video-only formats (a DASH manifest with one BaseURL per Representation: yt-dlp's generic extractor
gives each as a plain ``http`` format, so the fast path and the streams strategy take them). Bytes are
the media bytes the server sent to the relay (yt-dlp's own read of a direct link, which every strategy
pays alike, is left out); the whole-file column is a plain GET of what yt-dlp would download whole.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from mipkit.config.recipe import load_recipe
from mipkit.core.records import SourceRequest, Window
from mipkit.demo.faultserver import FaultServer, Throttle
from mipkit.pipeline.process import build_source

SOURCE_S = 600
CACHE = Path(tempfile.gettempdir()) / "mipkit-bench-strategies"
# name -> (ffmpeg video options, (width, height), kbit/s): the formats the DASH manifest offers
VIDEOS = {
    "v480.mp4": ((854, 480), 1000),
    "v360.mp4": ((640, 360), 500),
    "v240.mp4": ((426, 240), 250),
}
AUDIO = "a.m4a"
MUXED = "muxed.mp4"
THROTTLE = 32 * 1024


def generate(cache: Path = CACHE) -> Path:
    """The source files, generated once (ffmpeg ultrafast; a test picture with moving content, a chirp)."""
    cache.mkdir(parents=True, exist_ok=True)
    base = ["ffmpeg", "-nostdin", "-v", "error", "-y"]
    if not (cache / AUDIO).is_file():
        chirp = "0.3*sin(2*PI*(220+200*sin(2*PI*t/7))*t)+0.02*(random(0)-0.5)"
        audio_in = ["-f", "lavfi", "-i", f"aevalsrc=exprs={chirp}:s=44100:d={SOURCE_S}"]
        subprocess.run(
            [*base, *audio_in, "-c:a", "aac", "-b:a", "128k", "-movflags", "+faststart", str(cache / "tmp-a.m4a")],
            check=True,
        )
        os.replace(cache / "tmp-a.m4a", cache / AUDIO)
    for name, ((width, height), kbps) in VIDEOS.items():
        if (cache / name).is_file():
            continue
        picture = ["-f", "lavfi", "-i", f"testsrc2=s={width}x{height}:r=25:d={SOURCE_S}"]
        rate = ["-b:v", f"{kbps}k", "-maxrate", f"{kbps}k", "-bufsize", f"{2 * kbps}k"]
        subprocess.run(
            [*base, *picture, "-an", "-c:v", "libx264", "-preset", "ultrafast", *rate, "-g", "50"]
            + ["-pix_fmt", "yuv420p", "-movflags", "+faststart", str(cache / f"tmp-{name}")],
            check=True,
        )
        os.replace(cache / f"tmp-{name}", cache / name)
    if not (cache / MUXED).is_file():
        inputs = ["-i", str(cache / "v480.mp4"), "-i", str(cache / AUDIO)]
        subprocess.run(
            [*base, *inputs, "-map", "0:v", "-map", "1:a", "-c", "copy", "-movflags", "+faststart"]
            + [str(cache / "tmp-muxed.mp4")],
            check=True,
        )
        os.replace(cache / "tmp-muxed.mp4", cache / MUXED)
    return cache


def _manifest(server: FaultServer, media: Path, name: str, urls: dict[str, str]) -> str:
    """A DASH manifest for ``urls`` (file name -> served URL)."""
    reps = [
        f'<Representation id="{n.split(".")[0]}" codecs="avc1.42c01e" bandwidth="{k * 1000}" width="{w}" '
        f'height="{h}"><BaseURL>{urls[n]}</BaseURL></Representation>'
        for n, ((w, h), k) in VIDEOS.items()
    ]
    (media / name).write_text(
        '<?xml version="1.0" encoding="UTF-8"?><MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" '
        f'mediaPresentationDuration="PT{SOURCE_S}S" minBufferTime="PT1.5S" '
        'profiles="urn:mpeg:dash:profile:isoff-on-demand:2011"><Period><AdaptationSet mimeType="audio/mp4">'
        '<Representation id="a" codecs="mp4a.40.2" bandwidth="128000" audioSamplingRate="44100">'
        f"<BaseURL>{urls[AUDIO]}</BaseURL></Representation></AdaptationSet>"
        f'<AdaptationSet mimeType="video/mp4">{"".join(reps)}</AdaptationSet></Period></MPD>'
    )
    return server.url(name)


def starts(count: int) -> list[float]:
    step = (SOURCE_S - 20.0) / count
    return [round(5.0 + step * k + 0.37, 3) for k in range(count)]


def _media_bytes(server: FaultServer, urls: list[str], direct: str | None) -> int:
    """Body bytes sent for ``urls``; the first plain GET of ``direct`` is yt-dlp's extraction, left out."""
    total = 0
    for url in urls:
        records = [r for r in server.requests_for(url) if r.method == "GET"]
        if url == direct and records and not records[0].range:
            records = records[1:]
        total += sum(r.body_bytes for r in records)
    return total


def run_one(server: FaultServer, media: Path, layout: str, strategy: str, windows: int, throttled: bool, work: Path):
    faults = (Throttle(bytes_per_s=THROTTLE),) if throttled else ()
    names = [MUXED] if layout == "muxed" else [AUDIO, *VIDEOS]
    urls = {name: server.url(name, *faults, fresh=True) for name in names}
    if layout == "muxed":
        page = direct = urls[MUXED]
    else:
        page = _manifest(server, media, f"m{len(server.log)}-{time.monotonic_ns()}.mpd", urls)
        direct = None
    recipe = load_recipe("mipnet").with_overrides({"fetch.strategy": strategy})
    request = SourceRequest(
        source_id="bench", url=page, windows=[Window(row=i + 1, start_s=s) for i, s in enumerate(starts(windows))]
    )
    began = time.perf_counter()
    pairs, statuses = build_source(request, recipe, work)
    wall = time.perf_counter() - began
    used = sorted({s.fetch_strategy for s in statuses})
    return {
        "pairs": len(pairs),
        "windows": windows,
        "bytes": _media_bytes(server, list(urls.values()), direct),
        "video_bytes": _media_bytes(server, [u for n, u in urls.items() if n in VIDEOS], direct),
        "wall": wall,
        "used": "+".join(used),
        "errors": [s.error for s in statuses if s.status != "ok"][:1],
    }


def whole_download(server: FaultServer, media: Path, layout: str) -> tuple[int, float]:
    """What yt-dlp downloads whole for this layout (the muxed file; best video + audio), and its wall time."""
    names = [MUXED] if layout == "muxed" else ["v480.mp4", AUDIO]
    began = time.perf_counter()
    size = 0
    for name in names:
        with urllib.request.urlopen(server.url(name, fresh=True)) as answer:
            while chunk := answer.read(1 << 20):
                size += len(chunk)
    return size, time.perf_counter() - began


def run(windows_list: list[int], throttled_windows: list[int], layouts: list[str]) -> list[str]:
    media = generate()
    rows = []
    work = Path(tempfile.mkdtemp(prefix="mipkit-bench-strategy-"))
    try:
        with FaultServer(media, max_stall_s=60) as server:
            for layout in layouts:
                whole, whole_wall = whole_download(server, media, layout)
                file_mb = whole / 1e6
                rows.append(
                    f"| {layout} | whole file (plain GET) | - | - | {file_mb:.2f} | - | 100 % | {whole_wall:.2f} | - |"
                )
                cases = [(s, n, False) for n in windows_list for s in ("sections", "streams", "auto")]
                if layout == "dash":
                    cases += [(s, n, True) for n in throttled_windows for s in ("sections", "auto")]
                for strategy, count, throttled in cases:
                    got = run_one(server, media, layout, strategy, count, throttled, work)
                    per_pair = got["bytes"] / max(got["pairs"], 1)
                    video = f"{got['video_bytes'] / max(got['pairs'], 1) / 1e6:.3f}" if layout == "dash" else "-"
                    where = f"{strategy}{' (throttled 32 KiB/s on Range)' if throttled else ''}"
                    rows.append(
                        f"| {layout} | {where} | {count} | {got['pairs']}/{count} | {per_pair / 1e6:.3f} | {video} | "
                        f"{100 * per_pair / whole:.2f} % | {got['wall']:.2f} | {got['used']} |"
                        + (f" {got['errors'][0][:80]}" if got["errors"] else "")
                    )
                    print(rows[-1], flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return rows


def report(rows: list[str]) -> str:
    sizes = {name: (CACHE / name).stat().st_size / 1e6 for name in [MUXED, AUDIO, *VIDEOS] if (CACHE / name).is_file()}
    described = ", ".join(f"{name} {mb:.1f} MB" for name, mb in sizes.items())
    return "\n".join(
        [
            f"One generated {SOURCE_S // 60}-minute source (H.264 ultrafast 25 fps, GOP 2 s; AAC 128k): {described}. "
            "muxed: one mp4 (direct link). dash: separate audio-only and video-only formats in a DASH manifest "
            "(yt-dlp picks v480 + a for sections; streams take a + v360, the smallest of at least "
            "clip.image_max_side = 512). Served by a fault server on 127.0.0.1 in the benchmark's process; "
            "recipe mipnet (10-s clips, images) with only fetch.strategy changed. Bytes per pair = media bytes "
            "the server sent for the source / pairs built (yt-dlp's own read of the direct link left out); "
            "% = of the whole-file download of the same layout.",
            "",
            "| layout | strategy | windows | pairs | MB per pair | of it video MB | % of whole | wall (s) | strategy used |",
            "|---|---|---:|---:|---:|---:|---:|---:|---|",
            *rows,
            "",
            f"Load average at the end: {os.getloadavg()[0]:.2f} (the machine is shared).",
        ]
    )
