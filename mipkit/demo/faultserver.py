"""A media server on 127.0.0.1 that misbehaves on purpose: stalls, cuts, lies, refuses, throttles.

It serves files exactly as ``MediaServer`` does (Range requests, byte counter) until a fault rule
matches a request path. Tests use it to prove how the fetch path (yt-dlp, its ffmpeg HTTP input,
mipkit's ffprobe) handles a hostile or broken host::

    with FaultServer(media_dir, max_stall_s=10) as server:
        cut = server.url("src0.mp4", CloseMidBody(after_bytes=64_000))      # a new alias path: its own source id
        server.set_fault("*", HttpError(429, retry_after=2))                # every path
        ...
        server.clear_faults("*")                                            # the storm ends
        server.log  # [RequestRecord(t, method, path, range, status, ...)], monotonic times

A fault fires on the n-th request of its rule when ``n > skip_requests``, every ``every``-th
request after that, at most ``times`` times. Every stall is capped by ``max_stall_s`` and wakes at
once when the server stops, so ``__exit__`` never waits on a stalled handler.
"""

from __future__ import annotations

import fnmatch
import io
import itertools
import socket
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from pathlib import Path
from urllib.parse import urlsplit

from mipkit.demo.mediaserver import _RANGE, MediaServer, _Handler


@dataclass(frozen=True, kw_only=True)
class Fault:
    """When a fault fires, counted over the requests its rule matched (1-based); keyword-only, so
    ``HttpError(503)`` or ``CloseMidBody(64_000)`` name their own first field."""

    skip_requests: int = 0  # the first N requests are served cleanly
    every: int = 1  # then fire on every k-th request (2 = every other one)
    times: int | None = None  # and at most this many times (None = always)

    def fires(self, request_number: int, fired_so_far: int) -> bool:
        n = request_number - self.skip_requests
        return n > 0 and (n - 1) % self.every == 0 and (self.times is None or fired_so_far < self.times)


@dataclass(frozen=True)
class StallBeforeHeaders(Fault):
    seconds: float = 10.0


@dataclass(frozen=True)
class StallMidBody(Fault):
    after_bytes: int = 65536  # of this response's body
    seconds: float = 10.0
    then_close: bool = False  # False: resume sending after the stall; True: close the connection


@dataclass(frozen=True)
class CloseMidBody(Fault):
    after_bytes: int = 65536  # only responses the client reads this far are cut


@dataclass(frozen=True)
class ShortContentLength(Fault):
    """Declare a Content-Length this fraction of the body (Content-Range still names the whole range)."""

    fraction: float = 0.5
    send_all: bool = False  # False: send just the declared bytes, a silently truncated answer;
    # True: send the whole body anyway, then close


@dataclass(frozen=True)
class HttpError(Fault):
    status: int = 500
    retry_after: float | None = None  # seconds, sent as Retry-After


@dataclass(frozen=True)
class Throttle(Fault):
    bytes_per_s: int = 32 * 1024
    range_only: bool = True  # throttle only 206 answers (sections), as YouTube does


@dataclass(frozen=True)
class IgnoreRange(Fault):
    """Answer every GET with 200 and the whole body, without Accept-Ranges (like ``python -m http.server``)."""


@dataclass
class RequestRecord:
    """One request, logged when it arrives and completed as it is answered."""

    t: float  # time.monotonic() when the request line arrived (system-wide on Linux)
    method: str
    path: str  # as requested, alias prefix included
    range: str  # the Range header, "" if none
    client: str  # "host:port" of the connection
    user_agent: str
    status: int | None = None  # None: no status line (yet, or the connection closed before one)
    body_bytes: int = 0  # bytes of body written to the client
    faults: tuple[str, ...] = ()  # names of the faults that fired


def file_scheme_page(target: str, title: str = "local media") -> str:
    """An HTML page whose ``<video src>`` and ``og:video`` point at ``file://target`` (an absolute path)."""
    url = "file://" + target
    return (
        f"<!DOCTYPE html><html><head><title>{title}</title>"
        f'<meta property="og:video" content="{url}"><meta property="og:video:type" content="video/mp4">'
        f'<meta property="og:title" content="{title}"></head>'
        f'<body><video src="{url}" controls></video></body></html>'
    )


class _Rule:
    def __init__(self, pattern: str, faults: tuple[Fault, ...]):
        self.pattern = pattern
        self.faults = faults
        self.requests = 0
        self.fired = [0] * len(faults)


class _FaultHandler(_Handler):
    server: FaultServer

    def setup(self):
        super().setup()
        self.server._track(self.connection, True)

    def finish(self):
        try:
            super().finish()
        finally:
            self.server._track(self.connection, False)

    def send_response(self, code, message=None):
        self._record.status = code
        super().send_response(code, message)

    def do_HEAD(self):
        self._serve(body=False)

    def do_GET(self):
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        requested = self.path
        self._record = RequestRecord(
            t=time.monotonic(),
            method=self.command,
            path=requested,
            range=self.headers.get("Range", ""),
            client=f"{self.client_address[0]}:{self.client_address[1]}",
            user_agent=self.headers.get("User-Agent", ""),
        )
        self.server._log_request(self._record)
        self._sent = 0
        try:
            path, self._rule, faults = self.server._resolve(urlsplit(requested).path)
            self._active = {
                type(f): f for f in faults if body or not isinstance(f, Throttle | StallMidBody | CloseMidBody)
            }
            stall = self._active.get(StallBeforeHeaders)
            self._fire(stall)
            if stall and not self.server._sleep(stall.seconds):
                return
            error = self._active.get(HttpError)
            if error:
                self._fire(error)
                self.send_response(error.status)
                if error.retry_after is not None:
                    self.send_header("Retry-After", f"{error.retry_after:g}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            source = self._head(path)
            if source is None:
                return
            try:
                if body:
                    self._copy(source)
            finally:
                source.close()
        finally:
            self.close_connection = True

    def _fire(self, fault: Fault | None) -> None:
        """Note that ``fault`` took effect (a cut past the end of a short answer never does)."""
        if fault is not None and type(fault).__name__ not in self._record.faults:
            self._record.faults += (type(fault).__name__,)
            self.server._count_firing(self._rule, fault)

    def _head(self, path: str):
        """Status line and headers; returns the body source positioned at its start, or None."""
        page = self.server.pages.get(path)
        file = None if page is not None else Path(self.translate_path(path))
        if page is None and not file.is_file():
            self.send_error(HTTPStatus.NOT_FOUND, "File not found")
            return None
        size = len(page) if page is not None else file.stat().st_size
        start, end = 0, size - 1
        ignore_range = self._active.get(IgnoreRange)
        match = _RANGE.match(self.headers.get("Range", "").strip())
        partial = bool(match and (match.group(1) or match.group(2))) and not ignore_range
        if ignore_range:
            self._fire(ignore_range)
        elif partial:
            if match.group(1):
                start = int(match.group(1))
                end = min(int(match.group(2)) if match.group(2) else size - 1, size - 1)
            else:
                start = max(size - int(match.group(2)), 0)
            if start >= size or start > end:
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", f"bytes */{size}")
                self.end_headers()
                return None
        self.send_response(HTTPStatus.PARTIAL_CONTENT if partial else HTTPStatus.OK)
        if partial:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.send_header("Content-Type", "text/html; charset=utf-8" if page is not None else self.guess_type(str(file)))
        if not ignore_range:
            self.send_header("Accept-Ranges", "bytes")
        length = end - start + 1
        short = self._active.get(ShortContentLength)
        if short:
            self._fire(short)
            length = int(length * short.fraction)
        self.send_header("Content-Length", str(length))
        self.end_headers()
        self._range = (start, end if short and short.send_all else start + length - 1)
        throttle = self._active.get(Throttle)
        self._throttle = throttle if throttle and (partial or not throttle.range_only) else None
        source = io.BytesIO(page) if page is not None else file.open("rb")
        source.seek(start)
        return source

    def _copy(self, source) -> None:
        remaining = self._range[1] - self._range[0] + 1
        stall, cut = self._active.get(StallMidBody), self._active.get(CloseMidBody)
        chunk_size = 16 * 1024
        if self._throttle:
            chunk_size = max(1, min(chunk_size, self._throttle.bytes_per_s // 10))
        while remaining > 0:
            limit = min(chunk_size, remaining)
            for fault in (stall, cut):  # stop exactly at a fault's byte offset
                if fault and self._sent < fault.after_bytes:
                    limit = min(limit, fault.after_bytes - self._sent)
            chunk = source.read(limit)
            if not chunk:
                return
            try:
                self.wfile.write(chunk)
                self.wfile.flush()
            except OSError:
                return  # clients (ffmpeg) close early after a seek: normal
            self._sent += len(chunk)
            self._record.body_bytes = self._sent
            remaining -= len(chunk)
            self.server.add_bytes(len(chunk))
            if cut and self._sent >= cut.after_bytes:
                self._fire(cut)
                self._abort()
                return
            if stall and self._sent == stall.after_bytes:
                self._fire(stall)
                if not self.server._sleep(stall.seconds) or stall.then_close:
                    self._abort()
                    return
            if self._throttle:
                self._fire(self._throttle)
                if not self.server._sleep(len(chunk) / self._throttle.bytes_per_s):
                    return

    def _abort(self) -> None:
        """Close the connection at once, mid-body, as a crashed or cut server does."""
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


class FaultServer(MediaServer):
    """``MediaServer`` with per-path fault rules, in-memory pages and a request log."""

    def __init__(self, root, port: int = 0, max_stall_s: float = 30.0):
        super().__init__(root, port)
        self.RequestHandlerClass = lambda *a, **kw: _FaultHandler(*a, directory=self.root, **kw)
        self.max_stall_s = max_stall_s
        self.pages: dict[str, bytes] = {}
        self.log: list[RequestRecord] = []
        self._rules: list[_Rule] = []  # newest first; the first match wins
        self._aliases: dict[str, str] = {}
        self._alias_ids = itertools.count(1)
        self._stopping = threading.Event()
        self._connections: set[socket.socket] = set()

    def url(self, name: str, *faults: Fault, fresh: bool = False) -> str:
        """URL of ``name``; with faults (or ``fresh``), a new alias path (its own source id and log entries) that carries them."""
        if not faults and not fresh:
            return super().url(name)
        alias = f"/_f{next(self._alias_ids)}/{name}"
        self._aliases[alias] = "/" + name
        if faults:
            self.set_fault(alias, *faults)
        return self.base_url + alias

    def set_fault(self, pattern: str, *faults: Fault) -> None:
        """Apply ``faults`` to request paths matching the glob ``pattern`` ("*" = every path)."""
        if len({type(f) for f in faults}) != len(faults):
            raise ValueError("one fault of each kind per rule")
        with self._lock:
            self._rules.insert(0, _Rule(pattern, faults))

    def clear_faults(self, pattern: str | None = None) -> None:
        """Remove the rules of ``pattern`` (None = all rules): the server behaves again."""
        with self._lock:
            self._rules = [r for r in self._rules if pattern is not None and r.pattern != pattern]

    def add_page(self, name: str, html: str) -> str:
        """Serve ``html`` at ``/name`` (from memory); returns its URL."""
        self.pages["/" + name] = html.encode("utf-8")
        return super().url(name)

    def requests_for(self, url_or_path: str) -> list[RequestRecord]:
        path = urlsplit(url_or_path).path
        with self._lock:
            return [r for r in self.log if urlsplit(r.path).path == path]

    def _resolve(self, path: str) -> tuple[str, _Rule | None, tuple[Fault, ...]]:
        """The served path behind an alias, its rule, and the faults due on this request."""
        with self._lock:
            rule = next((r for r in self._rules if fnmatch.fnmatchcase(path, r.pattern)), None)
            faults = ()
            if rule is not None:
                rule.requests += 1
                faults = tuple(f for i, f in enumerate(rule.faults) if f.fires(rule.requests, rule.fired[i]))
        return self._aliases.get(path, path), rule, faults

    def _count_firing(self, rule: _Rule | None, fault: Fault) -> None:
        with self._lock:
            if rule is not None and fault in rule.faults:
                rule.fired[rule.faults.index(fault)] += 1

    def _sleep(self, seconds: float) -> bool:
        """Wait up to ``min(seconds, max_stall_s)``; False when the server is stopping."""
        return not self._stopping.wait(min(seconds, self.max_stall_s))

    def _log_request(self, record: RequestRecord) -> None:
        with self._lock:
            self.log.append(record)

    def _track(self, connection: socket.socket, open_: bool) -> None:
        with self._lock:
            (self._connections.add if open_ else self._connections.discard)(connection)

    def stop(self) -> None:
        self._stopping.set()  # wakes every stalled or throttled handler
        with self._lock:
            for connection in list(self._connections):
                try:
                    connection.shutdown(
                        socket.SHUT_RDWR
                    )  # unblocks handlers stuck writing to a client that stopped reading
                except OSError:
                    pass
        super().stop()
