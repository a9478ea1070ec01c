"""Stable, path-safe identifiers for sources and pairs.

Ids become file and folder names, so everything that comes from a manifest or a remote server is
reduced to ``[A-Za-z0-9_-]`` before it touches the file system.
"""

from __future__ import annotations

import hashlib
import re
from urllib.parse import parse_qs, urlparse

_YOUTUBE_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")
_YOUTUBE_HOSTS = {"youtube.com", "www.youtube.com", "m.youtube.com", "music.youtube.com", "youtu.be"}
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


def sanitize_id(text: str, max_len: int = 64) -> str:
    """Reduce ``text`` to a safe file-name fragment (never empty, never '.' or '..')."""
    safe = _UNSAFE.sub("-", text).strip("-")[:max_len]
    return safe or "x"


def youtube_id(url_or_id: str) -> str | None:
    """The 11-character video id of a YouTube URL or bare id, else None."""
    text = url_or_id.strip()
    if _YOUTUBE_ID.match(text):
        return text
    parsed = urlparse(text)
    host = (parsed.hostname or "").lower()
    if host not in _YOUTUBE_HOSTS:
        return None
    if host == "youtu.be":
        candidate = parsed.path.lstrip("/").split("/")[0]
    elif parsed.path.startswith(("/shorts/", "/embed/", "/live/")):
        candidate = parsed.path.split("/")[2]
    else:
        candidate = parse_qs(parsed.query).get("v", [""])[0]
    return candidate if _YOUTUBE_ID.match(candidate) else None


def normalize_url(url_or_id: str) -> str:
    """A URL yt-dlp accepts: bare YouTube ids become watch URLs."""
    text = url_or_id.strip()
    if _YOUTUBE_ID.match(text) and "/" not in text:
        return f"https://www.youtube.com/watch?v={text}"
    return text


def source_id_for(url_or_id: str) -> str:
    """Stable id of a source, known before any network access.

    YouTube sources use their video id. Other URLs use the file stem plus a short hash of the
    whole URL, so two different URLs never share an id and the id is safe as a path.
    """
    yt = youtube_id(url_or_id)
    if yt:
        return yt
    parsed = urlparse(url_or_id.strip())
    stem = parsed.path.rstrip("/").rsplit("/", 1)[-1].rsplit(".", 1)[0] or parsed.hostname or "src"
    digest = hashlib.sha1(url_or_id.strip().encode("utf-8")).hexdigest()[:8]
    return f"{sanitize_id(stem, 40)}-{digest}"


def pair_id_for(source_id: str, start_s: float) -> str:
    """``<source_id>_<start in ms, 8 digits>``: stable across runs and sortable."""
    return f"{source_id}_{int(round(start_s * 1000)):08d}"
