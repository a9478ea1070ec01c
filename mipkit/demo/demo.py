"""The bundled offline demo: generated media on a 127.0.0.1 server, built through the real path.

Each source is cut into four scenes, and a scene's hidden factor drives its picture and its music
together (``mipkit.demo.synthetic_media.demo_spec_for_index``), so the tiny model trained at the end
has something to learn: its test MRR lands well above chance. The emotion of a window follows its hue.

The manifest mixes good sources with the failures a real crawl meets (a dead URL, a corrupt file,
a video shorter than a clip, a malformed row), so the demo also shows how failures are recorded.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from pathlib import Path

from mipkit.config.taxonomy import load_taxonomy
from mipkit.core import ui
from mipkit.demo.mediaserver import MediaServer
from mipkit.demo.synthetic_media import demo_spec_for_index, make_corrupt, make_video, spec_for_index
from mipkit.media.ffmpeg import require_ffmpeg

SOURCE_SECONDS = 52.0
WINDOW_STARTS = (1.5, 14.5, 27.5, 40.5)  # one window inside each of the four scenes (0, 13, 26 and 39 s on)


def make_demo_media(media_dir: Path, sources: int) -> None:
    """Generate the demo's media once (later runs reuse the files, unless the generator has changed)."""
    media_dir.mkdir(parents=True, exist_ok=True)
    stamp = media_dir / "specs.txt"
    specs = repr([demo_spec_for_index(index, SOURCE_SECONDS) for index in range(sources)])
    if not stamp.is_file() or stamp.read_text() != specs:
        for old in media_dir.glob("*.mp4"):
            old.unlink()
    for index in range(sources):
        path = media_dir / f"demo{index:03d}.mp4"
        if not path.is_file():
            make_video(path.with_suffix(".tmp.mp4"), demo_spec_for_index(index, SOURCE_SECONDS)).replace(path)
    short = media_dir / "short.mp4"
    if not short.is_file():
        make_video(short.with_suffix(".tmp.mp4"), spec_for_index(999, 6.0)).replace(short)
    if not (media_dir / "corrupt.mp4").is_file():
        make_corrupt(media_dir / "corrupt.mp4")
    stamp.write_text(specs)


def write_demo_manifest(path: Path, server: MediaServer, sources: int) -> Path:
    moods = load_taxonomy("audioset_moods").classes
    rows = []
    for index in range(sources):
        spec = demo_spec_for_index(index, SOURCE_SECONDS)
        url = server.url(f"demo{index:03d}.mp4")
        # Four explicit windows per source; labels use every spelling the manifest accepts.
        for k, start in enumerate(WINDOW_STARTS):
            mood = moods[min(int(spec.scene_at(start).hue * len(moods)), len(moods) - 1)]
            label = (mood.name, mood.display_name, mood.name.upper())[k % 3]
            rows.append(
                {
                    "url": url,
                    "start_s": str(start),
                    "emotion": label,
                    "title": f"Demo source {index}",
                    "license": "CC0-1.0",
                }
            )
    rows += [
        {"url": server.url("missing.mp4"), "start_s": "0", "emotion": "happy", "title": "dead link", "license": ""},
        {"url": server.url("corrupt.mp4"), "start_s": "0", "emotion": "sad", "title": "corrupt file", "license": ""},
        {"url": server.url("short.mp4"), "start_s": "", "emotion": "tender", "title": "6-second video", "license": ""},
        {
            "url": server.url("demo000.mp4"),
            "start_s": "ten",
            "emotion": "happy",
            "title": "malformed row",
            "license": "",
        },
    ]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["url", "start_s", "emotion", "title", "license"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def demo_split_of(server: MediaServer, sources: int) -> dict[str, str]:
    """Splits by source, pinned so that a small demo tests on a third of its sources (20 pairs of 16 sources)
    and still trains on half of them: fewer test pairs would leave chance so high that no model looks good."""
    from mipkit.core.ids import source_id_for

    def split(index: int) -> str:
        return "test" if index % 3 == 1 else "validation" if index % 6 == 5 else "train"

    return {source_id_for(server.url(f"demo{index:03d}.mp4")): split(index) for index in range(sources)}


def run_demo(
    out: Path,
    sources: int = 16,
    workers: int = 2,
    show_summary: Callable[[Path, dict], None] | None = None,
    train_step: Callable[[Path, Path], None] | None = None,
) -> None:
    """Generate media, serve it, build it; then ``show_summary`` and ``train_step`` (the cli composes both)."""
    from mipkit.config.recipe import load_recipe
    from mipkit.kinds.pairs import BuildOptions, build

    require_ffmpeg()
    out.mkdir(parents=True, exist_ok=True)
    ui.console.print(f"[bold]1/3[/bold] generating {sources} demo sources of {SOURCE_SECONDS:g} s with ffmpeg")
    make_demo_media(out / "media", sources)
    dataset_dir = out / "dataset"
    with MediaServer(out / "media") as server:
        manifest = write_demo_manifest(out / "manifest.csv", server, sources)
        ui.console.print(f"[bold]2/3[/bold] building {dataset_dir} through yt-dlp from {server.base_url}")
        # The server's port changes between runs, and so do the source ids: start each demo afresh.
        recipe = load_recipe("mipnet").with_overrides({"shards.sources_per_shard": 4})
        options = BuildOptions(
            manifest=manifest,
            out=dataset_dir,
            recipe=recipe,
            workers=workers,
            overwrite=True,
            split_of=demo_split_of(server, sources),
        )
        summary = build(options)
    if show_summary is not None:
        show_summary(dataset_dir, summary)
    if train_step is not None:
        train_step(dataset_dir, out / "runs" / "hgclim-tiny")
