"""Stable, path-safe identifiers for sources and pairs.

Ids become file and folder names, so everything that comes from a manifest or a remote server is
reduced to ``[A-Za-z0-9_-]`` before it touches the file system.
"""

from __future__ import annotations

import hashlib
import math
import re
import unicodedata
from urllib.parse import parse_qs, quote, urlparse, urlsplit

_YOUTUBE_ID = re.compile(r"^[A-Za-z0-9_-]{11}$")
_YOUTUBE_HOSTS = {
    "youtube.com",
    "www.youtube.com",
    "m.youtube.com",
    "music.youtube.com",
    "youtu.be",
    "youtube-nocookie.com",
    "www.youtube-nocookie.com",
}
_YOUTUBE_PATHS = ("/shorts/", "/embed/", "/live/", "/v/")
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
MAX_TIME_S = 86400.0  # 24 h: no clip window starts later in a real video; larger values are typos or attacks
CREDENTIALS_IN_URL = r"^([A-Za-z][A-Za-z0-9+.-]*://)[^/@\s]*@"  # RE2 and Python syntax alike


def redact_url(url: str | None) -> str | None:
    """Drop ``user:password@`` from a URL: credentials never travel with a release, a page or a search result."""
    return re.sub(CREDENTIALS_IN_URL, r"\1", url) if url else url


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
    elif parsed.path.startswith(_YOUTUBE_PATHS):
        candidate = parsed.path.split("/")[2]
    else:
        candidate = parse_qs(parsed.query).get("v", [""])[0]
    return candidate if _YOUTUBE_ID.match(candidate) else None


# Query parameters that only say where a link was shared from: they never change the media.
_TRACKING_PARAM = re.compile(
    r"^(utm_[a-z_]+|fbclid|gclid|dclid|gbraid|wbraid|msclkid|mc_cid|mc_eid|igshid|_ga|_gl)$", re.IGNORECASE
)
_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_TAB_NEWLINE = str.maketrans("", "", "\t\n\r")


def _normalise_escapes(text: str, safe: str) -> str:
    """RFC 3986 normal form: escapes of unreserved characters decoded, others upper-case, the rest escaped."""
    text = _ESCAPE.sub(
        lambda m: chr(int(m.group(1), 16)) if chr(int(m.group(1), 16)) in _UNRESERVED else m.group(0).upper(), text
    )
    return quote(text, safe=safe + "%")


def _control_character(text: str) -> str | None:
    for position, char in enumerate(text):
        if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp"):
            return f"U+{ord(char):04X} at position {position}"
    return None


def canonical_url(url_or_id: str) -> str:
    """The one spelling of a source: what is fetched, and what its id is made from.

    Spellings of one video become one URL, so they get one source id and one split: YouTube links
    (youtu.be, watch?v=, shorts, embed, m./music., extra parameters) become the watch URL of their
    id; other URLs lose tabs and newlines (as browsers drop them), the fragment, default ports,
    tracking parameters and escape differences, and keep their query sorted. ``ValueError`` says
    why a text cannot be fetched at all (a control character, no host, a bad port).
    """
    text = str(url_or_id).translate(_TAB_NEWLINE).strip()
    if _YOUTUBE_ID.match(text):
        return f"https://www.youtube.com/watch?v={text}"
    control = _control_character(text)
    if control:
        raise ValueError(f"url has a control character ({control}); remove it")
    if text.lower().split("/", 1)[0] in _YOUTUBE_HOSTS:
        text = "https://" + text  # "youtu.be/ID" as pasted from a share box
    try:
        parts = urlsplit(text)
    except ValueError as exc:  # e.g. "Invalid IPv6 URL"
        raise ValueError(f"url {text[:80]!r} is not a URL ({exc})") from None
    try:
        port = parts.port
    except ValueError:
        port = 0
    if port == 0:
        raise ValueError(f"url {text[:80]!r} has a bad port (1-65535)")
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS:
        raise ValueError(f"url {text[:80]!r} is neither a YouTube id nor an http(s) URL")
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise ValueError(f"url {text[:80]!r} has no host")
    video = youtube_id(text)
    if video:
        return f"https://www.youtube.com/watch?v={video}"
    netloc = f"[{host}]" if ":" in host else host
    if port is not None and port != _DEFAULT_PORTS[scheme]:
        netloc += f":{port}"
    if "@" in parts.netloc:
        netloc = parts.netloc.rsplit("@", 1)[0] + "@" + netloc
    path = _normalise_escapes(parts.path or "/", "/:@!$&'()*+,;=")
    pieces = [p for p in parts.query.split("&") if p and not _TRACKING_PARAM.match(p.split("=", 1)[0])]
    query = "&".join(sorted(_normalise_escapes(p, "/:@!$'()*+,;=?") for p in pieces))
    return f"{scheme}://{netloc}{path}" + (f"?{query}" if query else "")


def normalize_url(url_or_id: str) -> str:
    """A URL yt-dlp accepts: ``canonical_url``, or the stripped text when it has no canonical form."""
    try:
        return canonical_url(url_or_id)
    except ValueError:
        return str(url_or_id).strip()


def source_id_for(url_or_id: str) -> str:
    """Stable id of a source, known before any network access.

    YouTube sources use their video id. Other URLs use the file stem plus a short hash of the
    canonical URL, so two spellings of one URL share an id, two different URLs never do, and the
    id is safe as a path.
    """
    url = normalize_url(url_or_id)
    yt = youtube_id(url)
    if yt:
        return yt
    parsed = urlparse(url)
    stem = parsed.path.rstrip("/").rsplit("/", 1)[-1].rsplit(".", 1)[0] or parsed.hostname or "src"
    digest = hashlib.sha1(url.encode("utf-8")).hexdigest()[:8]
    return f"{sanitize_id(stem, 40)}-{digest}"


def parse_time_s(value, name: str = "time") -> float:
    """A time in a video, in seconds, or ``ValueError`` with the reason: finite, from 0 to 24 h."""
    if isinstance(value, bool):
        raise ValueError(f"{name} {value!r} is not a number")
    try:
        seconds = float(value)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{name} {str(value)[:40]!r} is not a number") from None
    if not math.isfinite(seconds) or not 0 <= seconds <= MAX_TIME_S:
        raise ValueError(f"{name} {str(value)[:40]!r} must be a number of seconds between 0 and {MAX_TIME_S:g} (24 h)")
    return seconds


def pair_id_for(source_id: str, start_s: float) -> str:
    """``<source_id>_<start in ms, 8 digits>``: stable across runs and sortable."""
    if not (
        math.isfinite(start_s) and 0 <= start_s <= MAX_TIME_S
    ):  # readers check first; this keeps a bug from overflowing
        raise ValueError(f"start {start_s!r} s is outside 0-{MAX_TIME_S:g} s")
    return f"{source_id}_{int(round(start_s * 1000)):08d}"
