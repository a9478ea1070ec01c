"""The fast path of one source: every window through one ffmpeg that reads the resolved URL(s).

``extract_info`` has already resolved the media; here each window runs one ffmpeg (clip + frame)
against the relay (``mipkit.media.relay``), and every outcome becomes a status from what happened: the
relay's record of the transfer first, then ffmpeg's exit and output. Transient faults are retried
with back-off (a ``Retry-After`` is honoured); with a host gate, rate limits go to the gate instead.
Formats that are not plain http(s) files (HLS, DASH segments) go the yt-dlp section path instead
(``fast_path_formats`` returns None).
"""

from __future__ import annotations

import io
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import soundfile as sf
from PIL import Image

from mipkit.config.recipe import Recipe
from mipkit.core import records
from mipkit.media.relay import Fault, MediaRelay, Ticket, check_http_url
from mipkit.media.window import WindowJob, WindowResult, probe_duration, run_window, seeks_exactly
from mipkit.media.ytdlp import blocked_reason
from mipkit.pipeline.politeness import HostGate, SessionBlocked

DIRECT_PROTOCOLS = (None, "", "http", "https")
# Window ffmpegs are CPU work: about one per core in this process, whatever the number of fetch threads.
_FFMPEG_SLOTS = threading.BoundedSemaphore(max(1, os.cpu_count() or 1))


def ffmpeg_slots() -> int:
    return max(1, os.cpu_count() or 1)


@dataclass
class WindowOutcome:
    status: str
    error: str = ""
    flac: bytes = b""
    jpeg: bytes | None = None
    slow: bool = False  # a ranged read was cut for being slower than fetch.min_section_kib_s (auto)


def resolved_formats(info: dict) -> list[dict]:
    return list(info.get("requested_formats") or [info])


def check_resolved_urls(info: dict) -> None:
    """Every URL yt-dlp resolved for download must be http(s) (a page may point at ``file://``)."""
    for fmt in resolved_formats(info):
        if fmt.get("url"):
            check_http_url(fmt["url"])


def fast_path_formats(info: dict) -> tuple[dict, dict | None] | None:
    """(audio format, video format) when each is one plain http(s) file; None for other protocols."""
    formats = resolved_formats(info)
    if not all(f.get("url") and f.get("protocol") in DIRECT_PROTOCOLS for f in formats):
        return None
    audio = next((f for f in formats if f.get("acodec") != "none"), None)
    video = next((f for f in formats if f.get("vcodec") != "none"), None)
    return (audio, video) if audio is not None else None


def ffmpeg_env() -> dict[str, str]:
    """ffmpeg talks only to the relay on 127.0.0.1: no proxy variables (the relay applies the proxy)."""
    return {
        k: v for k, v in os.environ.items() if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
    }


def _status_of(faults: list[Fault]) -> tuple[str, str, float | None] | None:
    """The status a list of transfer faults means, the worst first; None if nothing counts."""
    ranked = []
    for fault in faults:
        if fault.kind == "http_status":
            if fault.status == 416:
                continue  # ffmpeg probing past the end: normal
            if fault.status == 429:
                ranked.append((0, records.RATE_LIMITED, fault))
            elif fault.status in (403, 404, 410):
                ranked.append((1, records.UNAVAILABLE, fault))
            elif fault.status >= 500:
                ranked.append((2, records.NETWORK_ERROR, fault))
            else:
                ranked.append((3, records.DOWNLOAD_ERROR, fault))
        elif fault.kind == "too_large":
            ranked.append((3, records.DOWNLOAD_ERROR, fault))
        else:
            ranked.append((2, records.NETWORK_ERROR, fault))
    if not ranked:
        return None
    _, status, fault = min(ranked, key=lambda item: item[0])
    return status, fault.message, fault.retry_after


class SourceWindows:
    """The windows of one source on the fast path; ``classify`` and ``run`` keep statuses in one place."""

    def __init__(
        self,
        recipe: Recipe,
        relay: MediaRelay,
        audio: Ticket,
        video: Ticket | None,
        container: str | None,
        workdir: Path,
        classify_message,
        gate: HostGate | None = None,
        url: str = "",
        whole: bool = False,
    ):
        self.recipe = recipe
        self.relay = relay
        self.audio = audio
        self.video = video
        self.seek_audio = seeks_exactly(container)
        self.workdir = workdir
        self.classify_message = classify_message
        self.gate = gate  # the host's politeness and rate-limit breaker, for ``url`` (the source's page)
        self.url = url
        self.whole = whole  # the streams strategy: each ticket's file is fetched whole before the first window
        self.broken: WindowOutcome | None = None  # a whole fetch that failed for good: every window ends so
        # ffmpeg waits longer than the relay, so a stall is seen (and recorded) by the relay first.
        self.rw_timeout_s = recipe.socket_timeout_s * 2 + 5.0
        self.wall_timeout_s = recipe.fetch.window_timeout_s
        self.env = ffmpeg_env()

    def duration(self) -> float | None:
        return probe_duration(self.audio.local_url, self.rw_timeout_s, self.wall_timeout_s, self.env)

    def run(self, start: float) -> WindowOutcome:
        """One window, retried while transient. With a gate, every try waits until the host is not paused;
        a rate limit (HTTP 429 seen by the relay) pauses the host for every worker, and a tripped breaker
        ends the window as ``pending`` unless this was its last try."""
        cfg = self.recipe.ytdlp
        if cfg.sleep_interval > 0:  # --sleep: yt-dlp pauses before each download; a window is one download here
            time.sleep(cfg.sleep_interval)
        attempt = 0
        while True:
            if self.gate is not None:
                try:
                    self.gate.wait_clear(self.url)
                except SessionBlocked:
                    return WindowOutcome(records.PENDING, blocked_reason(self.url))
            outcome, retry_after = self._attempt(start)
            if outcome.slow:
                return outcome  # not retried: the caller falls back to streams
            last = attempt >= cfg.extract_retries
            limited = self.gate is not None and outcome.status == records.RATE_LIMITED
            if limited:
                if self.gate.rate_limited(self.url, retry_after) and not last:
                    return WindowOutcome(records.PENDING, blocked_reason(self.url))
            elif self.gate is not None and outcome.status not in records.TRANSIENT_STATUSES:
                self.gate.answered(self.url)
            if outcome.status not in records.TRANSIENT_STATUSES or last:
                return outcome
            attempt += 1
            if not limited:  # the gate already paused the host
                pause = min(retry_after or 0.0, self.recipe.fetch.max_retry_after_s)
                time.sleep(max(cfg.retry_backoff_s * attempt, pause))

    def _attempt(self, start: float) -> tuple[WindowOutcome, float | None]:
        clip = self.recipe.clip
        out = self.workdir / f"w{int(round(start * 1000)):09d}.flac"
        job = WindowJob(
            audio_url=self.audio.local_url,
            video_url=self.video.local_url if self.video else None,
            start_s=start,
            seconds=clip.seconds,
            sample_rate=clip.sample_rate,
            channels=clip.channels,
            image_at_s=start + clip.image_position * clip.seconds,
            image_max_side=clip.image_max_side,
            out_flac=out,
            seek_audio=self.seek_audio,
        )
        tickets = self.tickets()
        seen = [len(t.faults) for t in tickets]
        if self.whole:
            fetched = self._fetch_whole(tickets, seen)
            if fetched is not None:
                return fetched
        try:
            with _FFMPEG_SLOTS:
                result = run_window(job, self.rw_timeout_s, self.wall_timeout_s, self.env)
            faults = [f for t, n in zip(tickets, seen) for f in t.faults[n:]]
            outcome, retry_after = self._judge(result, faults, out)
            outcome.slow = outcome.status != records.OK and any(f.kind == "slow" for f in faults)
            return outcome, retry_after
        finally:
            out.unlink(missing_ok=True)

    def tickets(self) -> list[Ticket]:
        """The distinct tickets the windows read (one when audio and video are the same file)."""
        return [t for t in {id(self.audio): self.audio, id(self.video): self.video}.values() if t is not None]

    def _fetch_whole(self, tickets: list[Ticket], seen: list[int]) -> tuple[WindowOutcome, float | None] | None:
        """Fetch every ticket's file whole (once); None when all are here, else the failed try's outcome."""
        if self.broken is not None:
            return self.broken, None
        for ticket, n in zip(tickets, seen):
            if self.relay.fetch_whole(ticket):
                continue
            status, message, retry_after = _status_of(ticket.faults[n:]) or (
                records.DOWNLOAD_ERROR,
                "the stream could not be fetched whole",
                None,
            )
            outcome = WindowOutcome(status, message)
            if status not in records.TRANSIENT_STATUSES:
                self.broken = outcome  # e.g. larger than the whole-file limit: not fetched again per window
            return outcome, retry_after
        return None

    def _judge(self, result: WindowResult, faults: list[Fault], out: Path) -> tuple[WindowOutcome, float | None]:
        clip = self.recipe.clip
        wanted = int(round(clip.seconds * clip.sample_rate))
        complete = result.returncode == 0 and result.samples == wanted and (self.video is None or result.png)
        if complete:
            return WindowOutcome(
                records.OK, flac=out.read_bytes(), jpeg=self._jpeg(result.png) if self.video else None
            ), None
        fault = _status_of(faults)
        if fault is not None:
            status, message, retry_after = fault
            return WindowOutcome(status, message), retry_after
        if result.timed_out:
            return WindowOutcome(records.NETWORK_ERROR, f"{result.errors[0]} (recipe ytdlp.window_timeout_s)"), None
        if result.returncode != 0:
            message = " | ".join(result.errors[-3:]) or f"ffmpeg exited with code {result.returncode}"
            status = self.classify_message(message)
            return WindowOutcome(records.DECODE_ERROR if status == records.DOWNLOAD_ERROR else status, message), None
        if any("partial file" in e or "ends prematurely" in e for e in result.errors):
            return WindowOutcome(records.NETWORK_ERROR, "the media ended early: the transfer was cut short"), None
        if result.samples < wanted:
            return self._short(result, out, wanted), None
        return WindowOutcome(records.DECODE_ERROR, "could not extract an image: no video frame at that time"), None

    def _short(self, result: WindowResult, out: Path, wanted: int) -> WindowOutcome:
        clip = self.recipe.clip
        if result.samples == 0 or wanted - result.samples > clip.max_short_fraction * wanted:
            where = f" (the media lasts {result.duration_s:.1f} s)" if result.duration_s else ""
            return WindowOutcome(records.TOO_SHORT, f"decoded audio is shorter than {clip.seconds:g} s{where}")
        if self.video is not None and not result.png:
            return WindowOutcome(records.DECODE_ERROR, "could not extract an image: no video frame at that time")
        from mipkit.media.ffmpeg import encode_flac, fit_length

        pcm, _ = sf.read(str(out), dtype="float32", always_2d=False)
        padded = fit_length(pcm, wanted, clip.max_short_fraction)
        return WindowOutcome(
            records.OK, flac=encode_flac(padded, clip.sample_rate), jpeg=self._jpeg(result.png) if self.video else None
        )

    def _jpeg(self, png: bytes) -> bytes:
        image = Image.open(io.BytesIO(png)).convert("RGB")
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=self.recipe.clip.image_quality)
        return buffer.getvalue()
