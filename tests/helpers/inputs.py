"""Small inputs of every build kind, shared by the tests of writers and of every kind's output."""

from __future__ import annotations

import json
from pathlib import Path

from conftest import write_manifest

REPO_ID = "someorg/mipnet-tiny"


def manifest_of(tmp_path: Path, server, sources: int = 1) -> Path:
    """A manifest of ``sources`` media-server sources, one labelled window each."""
    rows = [{"url": server.url(f"src{i}.mp4"), "start_s": 2, "emotion": "happy"} for i in range(sources)]
    return write_manifest(tmp_path / "m.csv", rows)


def yt8m_args_with_an_empty_split(root: Path) -> list[str]:
    """``build yt8m-*`` arguments for the test release, offline, whose test split ends up empty."""
    from tests.helpers.yt8m_fixtures import TRAIN, write_release

    paths = write_release(root)
    only_train = root / "train-only.jsonl"  # no validate* video has metadata: the test split is empty
    only_train.write_text(
        "".join(json.dumps({"id": v.id, "youtube_id": v.youtube_id, **v.jsonl}) + "\n" for v in TRAIN if v.jsonl)
    )
    return [
        "--tfrecords",
        str(paths["frames"]),
        "--vocabulary",
        str(paths["vocabulary"]),
        "--metadata",
        str(only_train),
        "--no-fetch",
        "--lookup-base",
        "http://127.0.0.1:9",
        "--cache-dir",
        str(root / "cache"),
    ]


def segments_csv(tmp_path: Path, ytids: list[str]) -> Path:
    """An AudioSet segment CSV: one happy-music segment (2-12 s) per id."""
    from mipkit.config.taxonomy import load_taxonomy

    happy = next(c.mid for c in load_taxonomy("audioset_moods").classes if c.name == "happy")
    path = tmp_path / "segments.csv"
    path.write_text(
        "# YTID, start_seconds, end_seconds, positive_labels\n"
        + "".join(f'{ytid}, 2.000, 12.000, "{happy}"\n' for ytid in ytids)
    )
    return path
