"""Title and keywords (YouTube tags) of a music video: from ``--metadata FILE.jsonl`` or yt-dlp.

yt-dlp runs ``extract_info(url, download=False, process=False)``: the extractor's metadata only,
no format selection and no media request. Answers are cached on disk per YouTube id (next to the
id lookup cache), so a ``yt8m-keyword`` build after a ``yt8m-title`` build of the same TFRecords,
or a resumed build, asks YouTube nothing again.

A metadata file has one JSON object per line: ``id`` (pseudo id), ``youtube_id``, ``title``,
``tags`` (list, or one comma-separated string). A line with a ``status`` other than ``ok`` (as
written by a build for dead videos: ``no_lookup``, ``private``, ``unavailable``) is reused as that
status. Every build writes such a file, ``OUT/build/metadata.jsonl``, to pass back later.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from mipkit.config.recipe import YtdlpConfig
from mipkit.core import records
from mipkit.core.errors import MipkitError
from mipkit.core.ids import youtube_id as parse_youtube_id
from mipkit.kinds.yt8m import NO_KEYWORDS, NO_LOOKUP, NO_METADATA, NO_TITLE, PRIVATE
from mipkit.kinds.yt8m.lookup import DiskCache, LookupClient, RateLimiter
from mipkit.media.ytdlp import FetchError, classify_error, open_ytdlp, with_retries, ytdlp_params

YOUTUBE_URL_TEMPLATE = "https://www.youtube.com/watch?v={youtube_id}"
# Failures a metadata file may carry forward: asking again would give the same answer.
REUSABLE_FAILURES = frozenset({NO_LOOKUP, PRIVATE, records.UNAVAILABLE})
_PRIVATE = re.compile(r"private video", re.I)


@dataclass
class VideoMeta:
    id: str
    youtube_id: str | None = None
    title: str = ""
    tags: list[str] = field(default_factory=list)
    status: str = records.OK
    error: str = ""
    origin: str = ""  # file | cache | ytdlp (not written)

    def verdict(self, kind: str) -> tuple[str, str]:
        """``(status, error)`` of the video in a ``title`` or ``keyword`` subset."""
        if self.status != records.OK:
            return self.status, self.error
        if kind == "title" and not self.title:
            return NO_TITLE, f"the video has an empty title ({self.origin or 'metadata'})"
        if kind == "keyword" and not self.tags:
            return NO_KEYWORDS, f"the video has no tags/keywords ({self.origin or 'metadata'})"
        return records.OK, ""

    def to_json(self) -> dict:
        row = {"id": self.id, "youtube_id": self.youtube_id}
        if self.status == records.OK:
            row.update(title=self.title, tags=self.tags)
        else:
            row.update(status=self.status, error=self.error)
        return row


def normalize_tags(value) -> list[str]:
    """Tags as a clean list: strings stripped, empties and repeats dropped, order kept."""
    if value is None:
        return []
    items = value.split(",") if isinstance(value, str) else list(value)
    seen: dict[str, None] = {}
    for item in items:
        text = " ".join(str(item).split()) if item is not None else ""
        if text and text not in seen:
            seen[text] = None
    return list(seen)


def meta_from_json(row: dict) -> VideoMeta:
    status = row.get("status") or records.OK
    youtube_id = parse_youtube_id(str(row["youtube_id"])) if row.get("youtube_id") else None  # a bare id or a watch URL
    return VideoMeta(
        id=str(row["id"]),
        youtube_id=youtube_id,
        title=" ".join(str(row.get("title") or "").split()),
        tags=normalize_tags(row.get("tags")),
        status=status,
        error=str(row.get("error") or ""),
    )


_FILES: dict[tuple, dict[str, dict]] = {}
_FILES_LOCK = threading.Lock()


def load_metadata_file(path: Path) -> dict[str, dict]:
    """``id -> row`` of a metadata JSONL (read once per process and file version)."""
    path = Path(path)
    if not path.is_file():
        raise MipkitError(
            f"--metadata {path.name!r} does not exist; pass a JSONL with id, youtube_id, title, tags per line"
        )
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    with _FILES_LOCK:
        if key not in _FILES:
            rows: dict[str, dict] = {}
            try:
                with path.open(encoding="utf-8") as handle:
                    for number, line in enumerate(handle, 1):
                        if not line.strip():
                            continue
                        try:
                            row = json.loads(line)
                        except ValueError:
                            raise MipkitError(
                                f"--metadata {path.name!r} line {number} is not JSON; each line must be one object with id, youtube_id, title, tags"
                            ) from None
                        if not isinstance(row, dict) or not isinstance(row.get("id"), str) or not row["id"]:
                            raise MipkitError(
                                f"--metadata {path.name!r} line {number} has no string 'id' (the 4-character pseudo id)"
                            )
                        rows[row["id"]] = row
            except UnicodeDecodeError:
                raise MipkitError(
                    f"--metadata {path.name!r} is not UTF-8 text; pass a JSONL with id, youtube_id, title, tags per line"
                ) from None
            _FILES.clear()
            _FILES[key] = rows
        return _FILES[key]


def status_of(message: str) -> str:
    """A yt-dlp error's status: ``private`` apart, as ``mipkit.media.ytdlp.classify_error`` says."""
    return PRIVATE if _PRIVATE.search(message) else classify_error(message)


class YtdlpMetadata:
    """``extract_info`` without download, rate-limited, retried on transient errors, cached."""

    def __init__(
        self,
        cfg: YtdlpConfig,
        url_template: str = YOUTUBE_URL_TEMPLATE,
        rate: float = 1.0,
        cache: DiskCache | None = None,
        private_dir: Path | None = None,
    ):
        self.cfg = cfg
        # The private cookies copy lives in the build's own folder (beside the cache), never in /tmp.
        self.private_dir = private_dir or (
            cache.root.parent / "private" if cache is not None else Path("build") / "private"
        )
        self.url_template = url_template
        self.limiter = RateLimiter(rate)
        self.cache = cache

    def url_for(self, youtube_id: str) -> str:
        return self.url_template.format(youtube_id=youtube_id)

    def fetch(self, pseudo_id: str, youtube_id: str) -> VideoMeta:
        if self.cache is not None:
            hit = self.cache.get(youtube_id)
            if hit is not None and hit.get("status", records.OK) == records.OK:
                meta = meta_from_json({**hit, "id": pseudo_id})
                meta.origin = "cache"
                return meta

        def action(logger):
            params = {**ytdlp_params(self.cfg, logger), "skip_download": True, "ignore_no_formats_error": True}
            with open_ytdlp(params, self.private_dir) as ydl:
                return ydl.extract_info(self.url_for(youtube_id), download=False, process=False)

        try:
            info = with_retries(
                action, self.cfg, "extract_info failed", classify=status_of, before_try=self.limiter.wait
            )
        except FetchError as exc:
            return VideoMeta(pseudo_id, youtube_id, status=exc.status, error=str(exc), origin="ytdlp")
        if not info:
            return VideoMeta(
                pseudo_id, youtube_id, status=records.UNAVAILABLE, error="extract_info returned nothing", origin="ytdlp"
            )
        meta = VideoMeta(
            pseudo_id,
            youtube_id,
            title=" ".join(str(info.get("title") or "").split()),
            tags=normalize_tags(info.get("tags")),
            origin="ytdlp",
        )
        if self.cache is not None:
            self.cache.put(
                youtube_id,
                {
                    "youtube_id": youtube_id,
                    "title": meta.title,
                    "tags": meta.tags,
                    "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                },
            )
        return meta


class MetadataResolver:
    """Pseudo id -> ``VideoMeta``: the metadata file first, then the id lookup and yt-dlp."""

    def __init__(self, known: dict[str, dict], lookup: LookupClient, ytdlp: YtdlpMetadata, fetch: bool = True):
        self.known = known
        self.lookup = lookup
        self.ytdlp = ytdlp
        self.fetch = fetch

    def resolve(self, pseudo_id: str) -> VideoMeta:
        row = self.known.get(pseudo_id)
        youtube_id = None
        if row is not None:
            meta = meta_from_json(row)
            meta.origin = "file"
            if meta.status != records.OK:
                if meta.status in REUSABLE_FAILURES:
                    meta.error = meta.error or "as recorded in --metadata"
                    return meta
            elif "title" in row or "tags" in row:
                return meta
            youtube_id = meta.youtube_id
        if not self.fetch:
            return VideoMeta(
                pseudo_id,
                youtube_id,
                status=NO_METADATA,
                error="not in --metadata (with title or tags) and --no-fetch was given",
            )
        if youtube_id is None:
            found = self.lookup.resolve(pseudo_id)
            if found.status != records.OK:
                return VideoMeta(pseudo_id, None, status=found.status, error=found.error, origin="lookup")
            youtube_id = found.youtube_id
        return self.ytdlp.fetch(pseudo_id, youtube_id)


def merge_metadata_files(files: list[Path], target: Path) -> int:
    """Concatenate shard ``metadata.jsonl`` files into ``target``, one line per video (last wins)."""
    merged: dict[str, dict] = {}
    for path in files:
        with Path(path).open(encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    row = json.loads(line)
                    merged[row["id"]] = row
    write_metadata_jsonl(Path(target), list(merged.values()))
    return len(merged)


def write_metadata_jsonl(path: Path, rows: list[dict]) -> None:
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")
    os.replace(tmp, path)
