"""A tiny YouTube-8M release for the tests: TFRecords, a vocabulary, the id lookup and video pages.

Two TFRecord files (``train0000``, ``validate0000``) hold music and non-music videos of varying
length plus one broken record. A folder served on 127.0.0.1 stands in for the id lookup
(``lookup/{id[:2]}/{id}.js``: a hit, an error document, a missing file) and for YouTube: each
``videos/<youtubeId>.html`` carries a schema.org VideoObject, so yt-dlp's real generic extractor
reads its title and tags. Some videos' metadata comes from a JSONL file instead.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

MUSIC = 14  # "Music video" in the test vocabulary, as in the 2018 one
ERROR_DOCUMENT = (
    "<?xml version='1.0' encoding='UTF-8'?><Error><Code>AccessDenied</Code><Message>Access denied.</Message></Error>"
)


@dataclass
class FakeVideo:
    id: str
    labels: list[int]
    seconds: int
    lookup: str = "ok"  # ok | error_document | missing
    page: dict | None = None  # VideoObject fields served for yt-dlp, None = 404
    jsonl: dict | None = None  # a line of the --metadata file (without id)
    rgb: np.ndarray = field(default=None, repr=False)
    audio: np.ndarray = field(default=None, repr=False)

    @property
    def youtube_id(self) -> str:
        return f"yt{self.id}00001"

    @property
    def is_music(self) -> bool:
        return MUSIC in self.labels


TRAIN = [
    FakeVideo("AAaa", [3, MUSIC], 5, jsonl={"title": "Song A", "tags": ["pop", "dance"]}),
    FakeVideo("ABab", [MUSIC], 7, page={"name": "Song B &amp; Co", "keywords": "rock, live ,rock"}),
    FakeVideo("ACac", [MUSIC, 20], 3, lookup="error_document"),
    FakeVideo("ADad", [MUSIC], 4, lookup="missing"),
    FakeVideo("AEae", [1, 2], 6),  # not music
    FakeVideo("AFaf", [MUSIC], 2, jsonl={"title": "Only title", "tags": []}),
    FakeVideo("AGag", [MUSIC], 3),  # page 404: unavailable
]
VALIDATE = [
    FakeVideo("BAba", [MUSIC], 9, jsonl={"title": "", "tags": "jazz, blues"}),
    FakeVideo("BBbb", [0, MUSIC], 1, page={"name": "Song BB"}),  # no keywords
    FakeVideo("BCbc", [5], 2),  # not music
]
BAD_RECORD_ID = "BDbd"  # music label but 1000-byte rgb frames

TITLE_EXPECTED = {
    "ok": {"AAaa", "ABab", "AFaf", "BBbb"},
    "no_lookup": {"ACac", "ADad"},
    "unavailable": {"AGag"},
    "no_title": {"BAba"},
    "bad_record": {BAD_RECORD_ID},
}
KEYWORD_EXPECTED = {
    "ok": {"AAaa", "ABab", "BAba"},
    "no_keywords": {"AFaf", "BBbb"},
    "no_lookup": {"ACac", "ADad"},
    "unavailable": {"AGag"},
    "bad_record": {BAD_RECORD_ID},
}


def all_videos() -> list[FakeVideo]:
    return TRAIN + VALIDATE


def _fill(videos: list[FakeVideo], rng: np.random.Generator) -> None:
    for video in videos:
        video.rgb = rng.integers(0, 256, (video.seconds, 1024), dtype=np.uint8)
        video.audio = rng.integers(0, 256, (video.seconds, 128), dtype=np.uint8)
        video.rgb[:, -3:] = 0  # trailing zero bytes must survive (np.array(bytes) would drop them)
        video.audio[:, -1] = 0


def write_tfrecord(path: Path, videos: list[FakeVideo], bad_record: bool = False) -> Path:
    from tfrecord.writer import TFRecordWriter

    writer = TFRecordWriter(str(path))
    for video in videos:
        writer.write(
            {"id": (video.id.encode(), "byte"), "labels": (video.labels, "int")},
            {
                "rgb": ([row.tobytes() for row in video.rgb], "byte"),
                "audio": ([row.tobytes() for row in video.audio], "byte"),
            },
        )
    if bad_record:
        writer.write(
            {"id": (BAD_RECORD_ID.encode(), "byte"), "labels": ([MUSIC], "int")},
            {"rgb": ([bytes(1000)] * 2, "byte"), "audio": ([bytes(128)] * 2, "byte")},
        )
    writer.close()
    return path


def write_vocabulary(path: Path) -> Path:
    rows = [
        "Index,TrainVideoCount,KnowledgeGraphId,Name,WikiUrl",
        "0,788288,/m/03bt1gh,Game,x",
        "3,300000,/m/01jddz,Concert,x",
        f"{MUSIC},200000,/m/0mdxd,Music video,x",
        "20,1000,/m/04rlf,Music,x",
    ]
    path.write_text("\n".join(rows) + "\n")
    return path


def write_release(root: Path, seed: int = 0) -> dict[str, Path]:
    """TFRecords, vocabulary and metadata JSONL under ``root``; returns their paths."""
    rng = np.random.default_rng(seed)
    _fill(all_videos(), rng)
    frames = root / "frame"
    frames.mkdir(parents=True, exist_ok=True)
    write_tfrecord(frames / "train0000.tfrecord", TRAIN)
    write_tfrecord(frames / "validate0000.tfrecord", VALIDATE, bad_record=True)
    metadata = root / "metadata.jsonl"
    metadata.write_text(
        "".join(json.dumps({"id": v.id, "youtube_id": v.youtube_id, **v.jsonl}) + "\n" for v in all_videos() if v.jsonl)
    )
    return {"frames": frames, "vocabulary": write_vocabulary(root / "vocabulary.csv"), "metadata": metadata}


def write_site(root: Path, base_url: str) -> None:
    """The lookup answers and the video pages (pages name the server, so write them once it runs)."""
    for video in all_videos():
        if video.lookup != "missing":
            answer = root / "lookup" / video.id[:2] / f"{video.id}.js"
            answer.parent.mkdir(parents=True, exist_ok=True)
            answer.write_text(f'i("{video.id}","{video.youtube_id}");' if video.lookup == "ok" else ERROR_DOCUMENT)
        if video.page is not None:
            obj = {
                "@context": "https://schema.org",
                "@type": "VideoObject",
                "description": "a music video",
                "contentUrl": f"{base_url}/media/{video.youtube_id}.mp4",
                "uploadDate": "2020-01-01",
                **video.page,
            }
            page = root / "videos" / f"{video.youtube_id}.html"
            page.parent.mkdir(parents=True, exist_ok=True)
            page.write_text(
                f"<!DOCTYPE html><html><head><title>{video.page['name']}</title>"
                f'<script type="application/ld+json">{json.dumps(obj)}</script></head><body></body></html>'
            )
