"""yt-dlp as the toolkit uses it: options, the private cookies copy, the proxy, retries and error classes.

Every yt-dlp call of the toolkit goes through ``ytdlp_params`` + ``open_ytdlp`` + ``with_retries``, so
timeouts, proxy, cookies and the mapping of messages to statuses are decided in one place.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import time
from contextlib import contextmanager
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Protocol

import yt_dlp

from mipkit.config.politeness import HostPoliteness, canonical_host
from mipkit.config.recipe import YtdlpConfig
from mipkit.core import records
from mipkit.core.errors import MipkitError
from mipkit.media.checks import cookies_from_browser_spec
from mipkit.media.ffmpeg import MediaError
from mipkit.media.runtimes import js_runtime_param

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
            r"no decodable|could not read the media|Invalid argument|matches no streams",
            re.I,
        ),
    ),
    (
        records.NETWORK_ERROR,
        re.compile(
            r"HTTP Error 5\d\d|timed out|Connection refused|Connection reset|Temporary failure in name resolution|"
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
    secrets = [
        (effective_proxy(cfg), "<proxy>"),
        (cfg.cookiefile, "<cookies>"),
        (os.path.basename(cfg.cookiefile), "<cookies>"),
    ]
    for secret, label in secrets:
        if secret:
            text = text.replace(secret, label)
    return text


def retry_after_of(exc: BaseException, cap: float | None = 300.0) -> float | None:
    """The ``Retry-After`` seconds of the HTTP answer behind a yt-dlp error (its cause chain), if it sent one.

    Seconds or an HTTP date; capped at ``cap`` (None: uncapped, the host gate applies its own cap)."""
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        response = getattr(current, "response", None)
        headers = getattr(response, "headers", None) or getattr(current, "headers", None)
        value = headers.get("Retry-After") if hasattr(headers, "get") else None
        if value:
            seconds = parse_retry_after(str(value))
            return seconds if seconds is None or cap is None else min(seconds, cap)
        exc_info = getattr(current, "exc_info", None)
        todo += [
            getattr(current, "cause", None),
            current.__cause__,
            current.__context__,
            exc_info[1] if isinstance(exc_info, tuple) and len(exc_info) > 1 else None,
        ]
    return None


def parse_retry_after(value: str) -> float | None:
    """Retry-After is seconds or an HTTP date; None when it is neither."""
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


class RateLimitGate(Protocol):
    """What ``with_retries`` needs of the pipeline's host gate (``mipkit.pipeline.politeness.HostGate``)."""

    def rate_limited(self, url: str, retry_after: float | None = None) -> bool: ...

    def answered(self, url: str) -> None: ...


def blocked_reason(url: str) -> str:
    return f"not fetched: {canonical_host(url)} rate-limited this session; the same command fetches it later"


def with_retries(
    action,
    cfg: YtdlpConfig,
    what: str,
    classify=None,
    before_try=None,
    max_retry_after_s: float = 300.0,
    gate: RateLimitGate | None = None,
    url: str = "",
):
    """Run ``action(logger)``; retry transient failures with back-off; else raise ``FetchError``.

    ``classify`` maps the collected yt-dlp messages to a status (default ``classify_error``);
    ``before_try`` runs before every attempt (a rate limiter). A server's ``Retry-After`` is
    honoured, up to ``max_retry_after_s``. With a ``gate``, a rate limit pauses ``url``'s host for
    every worker instead (the action waits for the gate right before its request), and a tripped
    breaker ends the source as ``pending`` unless this was its last try.
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
                if gate.rate_limited(url, retry_after_of(exc, cap=None)) and not last:
                    raise FetchError(records.PENDING, blocked_reason(url)) from None
            elif gate is not None and status not in records.TRANSIENT_STATUSES:
                gate.answered(url)
            if status in records.TRANSIENT_STATUSES and not last:
                attempt += 1
                if gate is None or status != records.RATE_LIMITED:  # the gate already paused the host
                    time.sleep(max(cfg.retry_backoff_s * attempt, retry_after_of(exc, max_retry_after_s) or 0.0))
                continue
            raise FetchError(status, f"{what}: {one_line(redact(str(exc) or text, cfg))}") from None
        if gate is not None:
            gate.answered(url)
        return result


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


PROXY_ENV = ("MIPKIT_PROXY", "HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")


def effective_proxy(cfg: YtdlpConfig) -> str:
    """The recipe's proxy, else ``MIPKIT_PROXY``, else the standard variables: so it need not be on a command line."""
    if cfg.proxy:
        return cfg.proxy
    return next((os.environ[name] for name in PROXY_ENV if os.environ.get(name)), "")


def ytdlp_params(cfg: YtdlpConfig, logger: _CollectingLogger, host: HostPoliteness | None = None) -> dict:
    """yt-dlp's options for ``cfg``; ``host`` (the politeness of the source's host) adds its request spacing."""
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
    proxy = effective_proxy(cfg)
    if proxy:
        params["proxy"] = proxy
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


def warm_extractors(url: str) -> None:
    """Match ``url`` against yt-dlp's extractors once, as ``extract_info`` will: the first match of a process
    compiles their URL patterns (about half a second), which would otherwise fall between a politeness
    wait and the request it spaces."""
    from yt_dlp.extractor import gen_extractor_classes

    any(ie.suitable(url) for ie in gen_extractor_classes())


@contextmanager
def open_ytdlp(params: dict, private_dir: Path):
    """A ``YoutubeDL`` for ``params`` that cannot touch the user's cookies file.

    yt-dlp writes its cookie jar back to ``cookiefile`` whenever an instance closes; with several
    threads and processes that would rewrite (and could truncate) the user's file concurrently.
    Each instance gets a private copy (mode 0600) in ``private_dir``, a folder of the locked build
    (never the shared temp folder, where a kill would leave it), deleted afterwards.
    """
    params = dict(params)
    private = None
    if params.get("cookiefile"):
        private_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        private = private_dir / f"cookies-{secrets.token_hex(8)}.txt"
        with (
            open(private, "xb", opener=lambda path, flags: os.open(path, flags, 0o600)) as copy,
            open(params["cookiefile"], "rb") as original,
        ):
            shutil.copyfileobj(original, copy)
        params["cookiefile"] = str(private)
    try:
        with yt_dlp.YoutubeDL(params) as ydl:
            yield ydl
    finally:
        if private:
            private.unlink(missing_ok=True)
