"""Fetch strategy of the fast path (recipe ``fetch.strategy``): how a source's windows are read.

- ``sections``: every window reads its own byte ranges of the resolved format(s) through the relay:
  the 10-s audio span and about 1 s of video around the image time.
- ``streams``: the smallest audio-only format and (for images) the smallest video format of at least
  the recipe's image size are each fetched whole, once, through the relay; every window is cut from
  those copies, which go with the source's scratch folder.
- ``auto``: sections first; a ranged read slower than ``fetch.min_section_kib_s``, a seek/range error
  or a host that ignores Range moves the source (and every later source on that host, through the
  host gate's state) to streams.
"""

from __future__ import annotations

import math

from mipkit.config.recipe import Recipe
from mipkit.core import records
from mipkit.media.relay import Ticket

SECTIONS, STREAMS, AUTO = "sections", "streams", "auto"
_DIRECT = (None, "", "http", "https")
_GRACE_S = 1.0  # a window's transfer is judged for speed only after this long waiting on the host


def _http(fmt: dict) -> bool:
    url = fmt.get("url") or ""
    return url.startswith(("http://", "https://")) and fmt.get("protocol") in _DIRECT


def _size(fmt: dict, duration: float | None) -> float:
    """Bytes of the whole format: yt-dlp's size, else its estimate, else bitrate x duration; unknown last."""
    for key in ("filesize", "filesize_approx"):
        if fmt.get(key):
            return float(fmt[key])
    if fmt.get("tbr"):  # kbit/s; without a duration (a DASH manifest may give none) it still ranks
        return float(fmt["tbr"]) * 1000 / 8 * (duration or 1.0)
    return math.inf


def _side(fmt: dict) -> int:
    return max(fmt.get("width") or 0, fmt.get("height") or 0)


def stream_formats(info: dict, recipe: Recipe) -> tuple[dict, dict | None] | None:
    """(audio format, video format or None) to fetch whole, or None when no plain http(s) format has audio.

    Audio: the smallest audio-only format, else the smallest with audio. Video (with images): the smallest
    format with video whose picture is at least ``clip.image_max_side``, else the largest picture."""
    duration = info.get("duration")
    formats = [f for f in (info.get("formats") or [info]) if _http(f)]
    has_audio = [f for f in formats if f.get("acodec") != "none"]
    if not has_audio:
        return None
    audio_only = [f for f in has_audio if f.get("vcodec") == "none"]
    audio = min(audio_only or has_audio, key=lambda f: _size(f, duration))
    if not recipe.clip.image:
        return audio, None
    has_video = [f for f in formats if f.get("vcodec") != "none"]
    if not has_video:
        return audio, None
    need = recipe.clip.image_max_side
    big_enough = [f for f in has_video if need and _side(f) >= need]
    if big_enough:
        video = min(big_enough, key=lambda f: (_size(f, duration), _side(f)))
    else:
        video = max(has_video, key=lambda f: (_side(f), -_size(f, duration)))
    if audio is not video and audio.get("vcodec") != "none" and video.get("acodec") != "none":
        audio = video  # both muxed: one file serves both
    return audio, video


class SourceTransfer:
    """The bytes and host waiting time of a set of tickets since the last look: a window's throughput."""

    def __init__(self, tickets: list[Ticket]):
        self.tickets = tickets
        self.bytes, self.seconds = self._totals()

    def _totals(self) -> tuple[int, float]:
        return sum(t.bytes_in for t in self.tickets), sum(t.read_s for t in self.tickets)

    def slow_since(self, min_bytes_per_s: float) -> bool:
        """Whether what came in since the last call was slower than ``min_bytes_per_s``; resets the mark."""
        now_bytes, now_seconds = self._totals()
        got, waited = now_bytes - self.bytes, now_seconds - self.seconds
        self.bytes, self.seconds = now_bytes, now_seconds
        return waited >= _GRACE_S and got / waited < min_bytes_per_s


def needs_streams(tickets: list[Ticket], seen: list[int], outcome_status: str, outcome_error: str) -> str:
    """Why a sections window means the source should go to streams ("" if it should not)."""
    new = [f for t, n in zip(tickets, seen) for f in t.faults[n:]]
    if any(f.kind == "slow" for f in new):
        return "slow"
    if any(t.ignored_range for t in tickets):
        return "no-range"
    # A refused range (416) that failed the window, or ffmpeg's own seek failure; a transfer fault (cut,
    # short body) is not one: it is retried as network_error, as with any strategy.
    if outcome_status != records.OK and any(f.kind == "http_status" and f.status == 416 for f in new):
        return "seek"
    if outcome_status == records.DECODE_ERROR and "seek" in outcome_error.lower():
        return "seek"
    return ""
