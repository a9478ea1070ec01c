"""Stage 2, fetch: one ``extract_info`` per source; the windows are then read by the fast path
(``mipkit.pipeline.windows``: one ffmpeg per window on the resolved URLs) or, for formats that are not
plain http(s) files or with ``force_keyframes_at_cuts``, as yt-dlp sections (``download_sections``).
yt-dlp's options, retries and error classes live in ``mipkit.media.ytdlp``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from yt_dlp.utils import download_range_func

from mipkit.config.recipe import YtdlpConfig
from mipkit.core import records
from mipkit.media.ytdlp import (  # noqa: F401 - re-exported: the pipeline's callers import them from here
    FetchError,
    _CollectingLogger,
    blocked_reason,
    check_format,
    classify_error,
    effective_proxy,
    one_line,
    open_ytdlp,
    redact,
    retry_after_of,
    warm_extractors,
    with_retries,
    ytdlp_params,
)
from mipkit.pipeline.politeness import HostGate, SessionBlocked


def gate_call(wait, url: str) -> None:
    """``wait(url)`` of the host gate; a tripped breaker ends the source as ``pending``."""
    try:
        wait(url)
    except SessionBlocked:
        raise FetchError(records.PENDING, blocked_reason(url)) from None


@dataclass
class SourceInfo:
    info: dict
    duration: float | None
    title: str
    uploader: str
    license: str


class Fetcher:
    """Fetches the sections of one source; one instance per source (yt-dlp objects are not thread-safe)."""

    def __init__(self, cfg: YtdlpConfig, private_dir: Path, gate: HostGate | None = None):
        self.cfg = cfg
        self.private_dir = private_dir
        self.gate = gate
        self.url = ""

    def _params(self, logger: _CollectingLogger) -> dict:
        host = self.gate.politeness.for_url(self.url) if self.gate is not None else None
        return ytdlp_params(self.cfg, logger, host)

    def _wait_for_host(self, start: bool) -> None:
        """Right before a request (yt-dlp is set up by then, so the host sees the spacing the gate keeps)."""
        if self.gate is not None:
            gate_call(self.gate.start_source if start else self.gate.wait_clear, self.url)

    def extract(self, url: str) -> SourceInfo:
        """Resolve the source once; its info dict is reused for metadata and every section.

        With a gate, the first try is where a source starts on its host: it waits for the host's politeness."""
        self.url = url
        tries = []

        def action(logger):
            with open_ytdlp(self._params(logger), self.private_dir) as ydl:
                if self.gate is not None and not tries:
                    warm_extractors(url)
                self._wait_for_host(start=not tries)
                tries.append(1)
                info = ydl.extract_info(url, download=False)
                if info is not None:
                    # The cookies each media URL needs, for the relay (ffmpeg never sees them).
                    # Every format, not just the chosen ones: the streams strategy may fetch another one.
                    for fmt in [*(info.get("requested_formats") or [info]), *(info.get("formats") or [])]:
                        if fmt.get("url") and urlparse(fmt["url"]).scheme in ("http", "https"):
                            fmt["_mipkit_cookie"] = ydl.cookiejar.get_cookie_header(fmt["url"]) or ""
                return info

        info = with_retries(action, self.cfg, "extract_info failed", gate=self.gate, url=url)
        if info is None:
            raise FetchError(records.UNAVAILABLE, "extract_info returned nothing")
        if info.get("_type") == "playlist":
            raise FetchError(records.BAD_ROW, "the URL is a playlist; list its videos one per row")
        # Direct media links (generic extractor) carry no duration; the fast path reads it only if needed.
        duration = info.get("duration")
        return SourceInfo(
            info=info,
            duration=float(duration) if duration is not None else None,
            title=info.get("title") or "",
            uploader=info.get("uploader") or info.get("channel") or "",
            license=info.get("license") or "",
        )

    def download_sections(
        self, source: SourceInfo, source_id: str, ranges: list[tuple[float, float]], workdir: Path
    ) -> dict[float, Path]:
        """Download each ``(start, end)`` section into ``workdir``; returns start -> file."""
        workdir.mkdir(parents=True, exist_ok=True)

        def action(logger):
            params = self._params(logger)
            params.update(
                {
                    "outtmpl": {"default": f"{source_id}__%(section_start)s.%(ext)s"},
                    "paths": {"home": str(workdir), "temp": str(workdir)},
                    "download_ranges": download_range_func(None, ranges),
                    "force_keyframes_at_cuts": self.cfg.force_keyframes_at_cuts,
                    "overwrites": True,
                    "continuedl": False,
                }
            )
            with open_ytdlp(params, self.private_dir) as ydl:
                self._wait_for_host(start=False)
                ydl.process_ie_result(dict(source.info), download=True)

        with_retries(action, self.cfg, "download failed", gate=self.gate, url=self.url)
        found: dict[float, Path] = {}
        for path in workdir.glob(f"{source_id}__*"):
            if path.suffix in (".part", ".ytdl", ".temp") or ".part" in path.suffixes:
                continue
            stamp = path.name[len(source_id) + 2 :].rsplit(".", 1)[0]
            try:
                found[round(float(stamp), 3)] = path
            except ValueError:
                continue
        return found
