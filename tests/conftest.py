"""Shared fixtures: generated media served on 127.0.0.1, and one real build made from it."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from mipkit.demo.mediaserver import MediaServer
from mipkit.demo.synthetic_media import make_corrupt, make_video, spec_for_index

GOOD_SOURCES = 4
SOURCE_SECONDS = 30.0
# (source index, start_s, emotion as written in the manifest)
GOOD_WINDOWS = [
    (0, 3.0, "happy"),
    (0, 17.25, "happy"),
    (1, 0.0, "Sad music"),
    (1, 12.5, "sad"),
    (2, 8.0, "TENDER"),
    (3, 19.999, "scary"),
]


@pytest.fixture(scope="session")
def media_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("media")
    for index in range(GOOD_SOURCES):
        make_video(root / f"src{index}.mp4", spec_for_index(index, SOURCE_SECONDS))
    make_video(root / "short.mp4", spec_for_index(50, 6.0))
    make_corrupt(root / "corrupt.mp4")
    return root


@pytest.fixture(scope="session")
def media_server(media_dir):
    with MediaServer(media_dir) as server:
        yield server


def write_manifest(path: Path, rows: list[dict]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(
            handle, fieldnames=["url", "start_s", "emotion", "title", "license"], extrasaction="ignore"
        )
        writer.writeheader()
        writer.writerows(rows)
    return path


def standard_rows(server: MediaServer) -> list[dict]:
    rows = [
        {
            "url": server.url(f"src{i}.mp4"),
            "start_s": start,
            "emotion": emotion,
            "title": f"source {i}",
            "license": "CC0-1.0",
        }
        for i, start, emotion in GOOD_WINDOWS
    ]
    rows += [
        {"url": server.url("gone.mp4"), "start_s": 0, "emotion": "happy"},  # dead URL
        {"url": server.url("corrupt.mp4"), "start_s": 0, "emotion": "sad"},  # corrupt file
        {"url": server.url("short.mp4"), "start_s": 0, "emotion": "funny"},  # shorter than a clip
        {"url": server.url("src2.mp4"), "start_s": "soon", "emotion": "happy"},  # malformed start
        {"url": server.url("src2.mp4"), "start_s": 1, "emotion": "jolly"},  # label outside taxonomy
        {"url": server.url("src3.mp4"), "start_s": 25.0, "emotion": "sad"},  # window past the end
    ]
    return rows


@pytest.fixture(scope="session")
def standard_manifest(tmp_path_factory, media_server) -> Path:
    return write_manifest(tmp_path_factory.mktemp("manifest") / "manifest.csv", standard_rows(media_server))


def small_recipe(**overrides):
    from mipkit.config.recipe import load_recipe

    base = {"shards.sources_per_shard": 2, "shards.fetch_threads": 2, "ytdlp.extract_retries": 0}
    base.update(overrides)
    return load_recipe("mipnet").with_overrides(base)


def standard_split_of(server: MediaServer) -> dict[str, str]:
    """Pinned splits of the good sources (2 train, 1 validation, 1 test).

    Splits are planned over every *requested* source, and these source ids hash the server's random
    port: unpinned, the three failing sources could take every validation or test slot."""
    from mipkit.core.ids import source_id_for

    return {
        source_id_for(server.url(f"src{i}.mp4")): split
        for i, split in enumerate(["train", "train", "validation", "test"])
    }


def standard_build_options(manifest: Path, server: MediaServer, out: Path):
    from mipkit.kinds.pairs import BuildOptions

    return BuildOptions(
        manifest=manifest, out=out, recipe=small_recipe(), workers=1, split_of=standard_split_of(server)
    )


@pytest.fixture(scope="session")
def built_dataset(tmp_path_factory, standard_manifest, media_server) -> tuple[Path, dict]:
    """One build of the standard manifest: (out folder, summary)."""
    from mipkit.kinds.pairs import build

    out = tmp_path_factory.mktemp("built") / "ds"
    summary = build(standard_build_options(standard_manifest, media_server, out))
    return out, summary
