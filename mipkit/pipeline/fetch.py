"""Stage 2, fetch: one ``extract_info`` per source, then only the needed sections through yt-dlp.

yt-dlp's ``download_ranges`` makes ffmpeg read just the windows (HTTP range requests), and
``force_keyframes_at_cuts`` makes each section start exactly at its ``start_s``.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import yt_dlp
from yt_dlp.utils import download_range_func

from mipkit.config.politeness import HostPoliteness, canonical_host
from mipkit.config.recipe import YtdlpConfig
from mipkit.core import records
from mipkit.core.errors import MipkitError
from mipkit.media.checks import cookies_from_browser_spec
from mipkit.media.ffmpeg import MediaError, duration_of, probe
from mipkit.media.runtimes import js_runtime_param
from mipkit.pipeline.politeness import HostGate, SessionBlocked, retry_after_of

# Ordered: the first pattern that matches a yt-dlp/ffmpeg message decides the status.
_ERROR_KINDS = [
    (
        records.RATE_LIMITED,
        re.compile(
            r"HTTP Error 429|Too Many Requests|rate.?limit|try again later|Sign in to confirm you.re not a bot", re.I
        ),
    ),
    (
        records.UNAVAILABLE,
        re.compile(
            r"HTTP Error (404|410|403)|Video unavailable|Private video|has been removed|"
            r"not available|no longer available|account .* terminated|copyright|age.restricted|"
            r"Sign in to confirm your age|members.only|Unsupported URL|No video formats found",
            re.I,
        ),
    ),
    (
        records.DECODE_ERROR,
        re.compile(
            r"Invalid data found|moov atom not found|could not find codec|Error while decoding|"
            r"no decodable|could not read the media|Invalid argument",
            re.I,
        ),
    ),
    (
        records.NETWORK_ERROR,
        re.compile(
            r"timed out|Connection refused|Connection reset|Temporary failure in name resolution|"
            r"Network is unreachable|Remote end closed|IncompleteRead|EOF occurred|Failed to resolve|"
            r"Name or service not known|getaddrinfo failed|No address associated",
            re.I,
        ),
    ),
]


def classify_error(message: str) -> str:
    for status, pattern in _ERROR_KINDS:
        if pattern.search(message):
            return status
    return records.DOWNLOAD_ERROR


def one_line(message: str, limit: int = 300) -> str:
    """yt-dlp messages carry colour codes, prefixes and newlines; keep one short line."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", message)
    text = re.sub(r"^(ERROR|WARNING):\s*", "", " ".join(text.split()))
    # Strip local directory prefixes (absolute paths start a word); URL paths follow a host and stay.
    text = re.sub(r"(?<![\w.:/])(/[^\s:'\"/]+)+/", "", text)
    return text[:limit]


class FetchError(Exception):
    def __init__(self, status: str, message: str):
        super().__init__(message)
        self.status = status


def check_format(selector: str) -> None:
    """A config error now, rather than a failed shard later, for a format yt-dlp cannot parse."""
    try:
        with yt_dlp.YoutubeDL({"quiet": True, "logger": _CollectingLogger()}) as ydl:
            ydl.build_format_selector(selector)
    except (SyntaxError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise MipkitError(
            f"--format {selector!r} is not a valid yt-dlp format selector ({reason}); see yt-dlp's FORMAT SELECTION"
        ) from None


def redact(text: str, cfg: YtdlpConfig) -> str:
    """Remove the proxy URL (it may hold a password) and the cookies file name from a message."""
    secrets = [(cfg.proxy, "<proxy>"), (cfg.cookiefile, "<cookies>"), (os.path.basename(cfg.cookiefile), "<cookies>")]
    for secret, label in secrets:
        if secret:
            text = text.replace(secret, label)
    return text


def with_retries(
    action, cfg: YtdlpConfig, what: str, classify=None, before_try=None, gate: HostGate | None = None, url: str = ""
):
    """Run ``action(logger)``; retry transient failures with back-off; else raise ``FetchError``.

    ``classify`` maps the collected yt-dlp messages to a status (default ``classify_error``);
    ``before_try`` runs before every attempt (a rate limiter). With a ``gate``, a rate limit pauses
    ``url``'s host for every worker (the action waits for the gate right before its request), and a
    tripped breaker ends the source as ``pending`` unless this was its last try.
    """
    classify = classify or classify_error
    attempt = 0
    while True:
        if before_try is not None:
            before_try()
        logger = _CollectingLogger()
        try:
            result = action(logger)
        except (yt_dlp.utils.DownloadError, yt_dlp.utils.ExtractorError, MediaError, OSError) as exc:
            text = " | ".join(logger.messages + [str(exc)])
            status = classify(text)
            last = attempt >= cfg.extract_retries
            if gate is not None and status == records.RATE_LIMITED:
                if gate.rate_limited(url, retry_after_of(exc)) and not last:
                    raise FetchError(records.PENDING, _blocked_reason(url)) from None
            elif gate is not None and status not in records.TRANSIENT_STATUSES:
                gate.answered(url)
            if status in records.TRANSIENT_STATUSES and not last:
                attempt += 1
                if gate is None or status != records.RATE_LIMITED:  # the gate already paused the host
                    time.sleep(cfg.retry_backoff_s * attempt)
                continue
            raise FetchError(status, f"{what}: {one_line(redact(str(exc) or text, cfg))}") from None
        if gate is not None:
            gate.answered(url)
        return result


def _blocked_reason(url: str) -> str:
    return f"not fetched: {canonical_host(url)} rate-limited this session; the same command fetches it later"


def _gate_call(wait, url: str) -> None:
    try:
        wait(url)
    except SessionBlocked:
        raise FetchError(records.PENDING, _blocked_reason(url)) from None


class _CollectingLogger:
    """yt-dlp logger that keeps messages (for error classification) and prints nothing."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def debug(self, msg: str) -> None:
        if not msg.startswith("[debug] "):
            return

    def info(self, msg: str) -> None:
        return

    def warning(self, msg: str) -> None:
        self.messages.append(msg)

    def error(self, msg: str) -> None:
        self.messages.append(msg)


@dataclass
class SourceInfo:
    info: dict
    duration: float | None
    title: str
    uploader: str
    license: str


def ytdlp_params(cfg: YtdlpConfig, logger: _CollectingLogger, host: HostPoliteness | None = None) -> dict:
    params = {
        "format": cfg.format,
        "quiet": True,
        "no_warnings": False,
        "noprogress": True,
        "logger": logger,
        "noplaylist": True,
        "retries": cfg.retries,
        "fragment_retries": cfg.retries,
        "extractor_retries": cfg.retries,
        "socket_timeout": cfg.socket_timeout,
        "cachedir": False,
        "color": {"stdout": "never", "stderr": "never"},
    }
    if cfg.cookiefile:
        params["cookiefile"] = cfg.cookiefile
    if cfg.proxy:
        params["proxy"] = cfg.proxy
    if cfg.cookies_from_browser:
        params["cookiesfrombrowser"] = cookies_from_browser_spec(cfg.cookies_from_browser)
    if cfg.sleep_interval > 0:
        params["sleep_interval"] = cfg.sleep_interval
    if host is not None and host.sleep_requests_s > 0:
        params["sleep_interval_requests"] = host.sleep_requests_s
    runtime = js_runtime_param()
    if runtime:
        params["js_runtimes"] = runtime
    return params


@contextmanager
def open_ytdlp(params: dict):
    """A ``YoutubeDL`` for ``params`` that cannot touch the user's cookies file.

    yt-dlp writes its cookie jar back to ``cookiefile`` whenever an instance closes; with several
    threads and processes that would rewrite (and could truncate) the user's file concurrently.
    Each instance gets a private copy (mode 0600), deleted afterwards.
    """
    params = dict(params)
    private = None
    if params.get("cookiefile"):
        fd, private = tempfile.mkstemp(prefix="mipkit-cookies-", suffix=".txt")
        os.close(fd)
        os.chmod(private, 0o600)
        shutil.copyfile(params["cookiefile"], private)
        params["cookiefile"] = private
    try:
        with yt_dlp.YoutubeDL(params) as ydl:
            yield ydl
    finally:
        if private:
            os.unlink(private)


def _media_url(info: dict) -> tuple[str, dict[str, str]] | None:
    formats = info.get("requested_formats") or [info]
    first = formats[0]
    if first.get("url"):
        return first["url"], first.get("http_headers") or {}
    return None


class Fetcher:
    """Fetches the sections of one source; one instance per source (yt-dlp objects are not thread-safe)."""

    def __init__(self, cfg: YtdlpConfig, gate: HostGate | None = None):
        self.cfg = cfg
        self.gate = gate
        self.url = ""

    def _params(self, logger: _CollectingLogger) -> dict:
        host = self.gate.politeness.for_url(self.url) if self.gate is not None else None
        return ytdlp_params(self.cfg, logger, host)

    def _wait_for_host(self, start: bool) -> None:
        """Right before a request (yt-dlp is set up by then, so the host sees the spacing the gate keeps)."""
        if self.gate is not None:
            _gate_call(self.gate.start_source if start else self.gate.wait_clear, self.url)

    def extract(self, url: str) -> SourceInfo:
        """Resolve the source once; its info dict is reused for metadata and every section.

        With a gate, the first try is where a source starts on its host: it waits for the host's politeness."""
        self.url = url
        tries = []

        def action(logger):
            with open_ytdlp(self._params(logger)) as ydl:
                self._wait_for_host(start=not tries)
                tries.append(1)
                return ydl.extract_info(url, download=False)

        info = with_retries(action, self.cfg, "extract_info failed", gate=self.gate, url=url)
        if info is None:
            raise FetchError(records.UNAVAILABLE, "extract_info returned nothing")
        if info.get("_type") == "playlist":
            raise FetchError(records.BAD_ROW, "the URL is a playlist; list its videos one per row")
        duration = info.get("duration")
        if duration is None:
            # Direct media links (generic extractor) carry no duration: read it from the container.
            target = _media_url(info)
            if target is None:
                raise FetchError(records.DOWNLOAD_ERROR, "no media URL in the extracted info")
            try:
                duration = duration_of(probe(target[0], target[1], timeout=self.cfg.socket_timeout * 2))
            except MediaError as exc:
                raise FetchError(records.DECODE_ERROR, one_line(redact(str(exc), self.cfg))) from None
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
            with open_ytdlp(params) as ydl:
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
