"""A relay on 127.0.0.1 between ffmpeg and the media host.

ffmpeg reads ``http://127.0.0.1:PORT/<token>``; the relay makes the real request. So:
- cookies, headers and the proxy stay inside this process: never on an argv (``ps``), never on disk;
- every request to the host goes through the configured proxy, with a socket timeout;
- only http(s) is ever opened (redirects to other schemes are refused);
- transfer faults (5xx, 429, cut bodies, short bodies, stalls) are recorded per ticket, so a failed
  ffmpeg run is classified from what really happened on the wire, not from its stderr;
- a host without Range support (``python -m http.server``) is fetched once, whole, into the build's
  private temp area and served from there with Range: ffmpeg can seek in any container. The streams
  fetch strategy uses the same copy (``MediaRelay.fetch_whole``);
- every byte received is kept per ticket (``mipkit.media.spans``): ffmpeg's repeated reads of a
  header, of a window's overlap or of what sat in socket buffers when it closed are answered here;
- with ``Ticket.min_bytes_per_s`` (the auto strategy) a ranged answer slower than that is cut and
  recorded as a "slow" fault, so the source can fall back to streams.
"""

from __future__ import annotations

import re
import secrets
import socket
import threading
import time
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

from mipkit.media.bounded_http import BoundedHTTPHandler, BoundedHTTPSHandler
from mipkit.media.tickets import Fault, Ticket  # noqa: F401 - re-exported: callers import them from here

_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")
_RANGE_ANSWER = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_OPEN_RANGE = re.compile(r"bytes=(\d+)-$")
_CHUNK = 16 * 1024
_DOWNSTREAM_BUFFER = 8 * 1024
_SLOW_GRACE_S = 1.0  # a ranged answer is judged slow only after this long waiting on the host
ALLOWED_SCHEMES = ("http", "https")


class NotHttpError(ValueError):
    """A media URL that is not http(s): never opened."""


def check_http_url(url: str) -> str:
    scheme = urlparse(url).scheme.lower()
    if scheme not in ALLOWED_SCHEMES:
        raise NotHttpError(f"the media URL uses {scheme or 'no'} scheme; only http(s) media is opened")
    return url


class _NoOtherSchemes(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):
        if urlparse(newurl).scheme.lower() not in ALLOWED_SCHEMES:
            raise urllib.error.HTTPError(newurl, code, "redirect to a scheme other than http(s) refused", headers, fp)
        return super().redirect_request(req, fp, code, msg, headers, newurl)


def _retry_after(value: str | None) -> float | None:
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


class MediaRelay(ThreadingHTTPServer):
    """Serve registered tickets on 127.0.0.1 from a background thread; use as a context manager."""

    daemon_threads = True

    def __init__(
        self, temp_dir: Path, proxy: str = "", timeout: float = 30.0, retries: int = 3, max_whole_bytes: int = 2 << 30
    ):
        super().__init__(("127.0.0.1", 0), _RelayHandler)
        self.temp_dir = Path(temp_dir)
        self.timeout_s = timeout
        self.retries = retries
        self.max_whole_bytes = max_whole_bytes
        proxies = urllib.request.ProxyHandler({"http": proxy, "https": proxy} if proxy else {})
        handlers = [_NoOtherSchemes(), proxies, BoundedHTTPHandler(), BoundedHTTPSHandler()]
        self.opener = urllib.request.build_opener(*handlers)
        self.tickets: dict[str, Ticket] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def register(self, url: str, headers: dict[str, str]) -> Ticket:
        check_http_url(url)
        # A header value with a line break would smuggle a second header: drop it.
        clean = {
            k: v for k, v in headers.items() if "\r" not in v and "\n" not in v and "\r" not in k and "\n" not in k
        }
        token = secrets.token_urlsafe(16)
        ticket = Ticket(url=url, headers=clean, local_url=f"http://127.0.0.1:{self.server_address[1]}/{token}")
        with self._lock:
            self.tickets[token] = ticket
        return ticket

    def release(self, ticket: Ticket) -> None:
        with self._lock:
            self.tickets = {k: t for k, t in self.tickets.items() if t is not ticket}
        if ticket.whole_file is not None:
            ticket.whole_file.unlink(missing_ok=True)

    def _request(self, ticket: Ticket, range_header: str | None):
        request = urllib.request.Request(ticket.url, method="GET")
        for key, value in ticket.headers.items():
            if key.lower() == "cookie":
                request.add_unredirected_header(key, value)  # never sent on to another host
            else:
                request.add_header(key, value)
        if range_header is not None:  # None: a plain GET of the whole file (``fetch_whole``)
            request.add_header("Range", range_header or "bytes=0-")
        return self.opener.open(request, timeout=self.timeout_s)

    def open_upstream(self, ticket: Ticket, range_header: str | None):
        """The host's answer; a 5xx or a refused connection is retried here, within one read timeout
        in all (ffmpeg waits longer), so one bad answer does not cost the whole window."""
        budget = self.timeout_s
        attempt = 0
        while True:
            try:
                return self._request(ticket, range_header)
            except urllib.error.HTTPError as exc:
                retry_after = _retry_after(exc.headers.get("Retry-After") if exc.headers else None)
                transient = exc.code >= 500 or exc.code == 429
                pause = max(0.25 * 2**attempt, retry_after or 0.0)
                if not transient or attempt >= self.retries or pause > budget:
                    raise
            except urllib.error.URLError as exc:
                if not isinstance(exc.reason, ConnectionError) or attempt >= self.retries:
                    raise
                pause = 0.25 * 2**attempt
                if pause > budget:
                    raise
            budget -= pause
            attempt += 1
            time.sleep(pause)

    def fetch_whole(self, ticket: Ticket) -> bool:
        """Fetch ``ticket``'s file whole, once, with one plain GET (the streams strategy); every later read
        is served from the copy. Faults are recorded on the ticket as for any read; False if it failed."""
        with ticket.whole_lock:
            if ticket.whole_file is not None:
                return True
            upstream, _ = _open_recorded(self, ticket, None)
            if upstream is None:
                return False
            with upstream:
                ticket.whole_file = _fetch_whole(self, ticket, upstream)
            return ticket.whole_file is not None

    def start(self) -> MediaRelay:
        self._thread = threading.Thread(target=self.serve_forever, name="mipkit-media-relay", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def __enter__(self) -> MediaRelay:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _RelayHandler(BaseHTTPRequestHandler):
    server: MediaRelay

    def log_message(self, format, *args):  # noqa: A002 - the relay must never log URLs or headers
        return

    def setup(self):
        super().setup()
        # A small send buffer: the relay reads from the host only about as fast as ffmpeg consumes,
        # instead of filling loopback buffers (megabytes) that ffmpeg drops when it seeks.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, _DOWNSTREAM_BUFFER)

    def do_GET(self):  # noqa: N802 - http.server's naming
        ticket = self.server.tickets.get(self.path.lstrip("/"))
        if ticket is None:
            self.send_error(404)
            return
        asked = self.headers.get("Range", "").strip()
        if ticket.whole_file is not None:
            self._serve_file(ticket.whole_file, asked)
            return
        if ticket.min_bytes_per_s and any(f.kind == "slow" for f in ticket.faults):
            self.send_error(503)  # ffmpeg would go on asking for the rest, slowly: fail the window now
            return
        kept = _OPEN_RANGE.match(asked)
        if kept and ticket.cache.total and int(kept.group(1)) < ticket.cache.total:
            if ticket.cache.read(int(kept.group(1)), 1):
                self._serve_kept(ticket, int(kept.group(1)))
                return
        upstream, error = _open_recorded(self.server, ticket, asked)
        if upstream is None:
            self.send_error(error)
            return
        with upstream:
            accepts = "bytes" in (upstream.headers.get("Accept-Ranges") or "").lower()
            if upstream.status == 200 and (not accepts or not self._range_from_zero(asked)):
                # The host ignores Range: fetch the whole file once, then serve ranges from it.
                ticket.ignored_range = True
                with ticket.whole_lock:
                    if ticket.whole_file is None:
                        ticket.whole_file = _fetch_whole(self.server, ticket, upstream)
                if ticket.whole_file is None:
                    self.send_error(502)
                    return
                self._serve_file(ticket.whole_file, asked)
                return
            self._pass_through(ticket, upstream)

    @staticmethod
    def _range_from_zero(asked: str) -> bool:
        match = _RANGE.match(asked)
        return not asked or bool(match and match.group(1) in ("", "0") and not match.group(2))

    @staticmethod
    def _span_of(ticket: Ticket, upstream):
        """The answer's Content-Range match, with a truncated answer recorded as a cut."""
        length = upstream.headers.get("Content-Length")
        span = _RANGE_ANSWER.match(upstream.headers.get("Content-Range") or "")
        if span and length is not None and int(span.group(2)) - int(span.group(1)) + 1 != int(length):
            # The answer's Content-Length is shorter than the range it names: a truncated body.
            ticket.fault(Fault("cut", f"Content-Length {length} does not match Content-Range {span.group(0)}"))
        return span

    def _pass_through(self, ticket: Ticket, upstream) -> None:
        length = upstream.headers.get("Content-Length")
        span = self._span_of(ticket, upstream)
        self.send_response(upstream.status)
        for key in ("Content-Type", "Content-Length", "Content-Range", "Accept-Ranges"):
            if upstream.headers.get(key):
                self.send_header(key, upstream.headers[key])
        self.end_headers()
        offset = int(span.group(1)) if span else 0
        total = (int(span.group(3)) if span.group(3) != "*" else None) if span else None
        if upstream.status == 200 and length is not None:
            total = int(length)
        if total is not None and not ticket.cache.learn(total, upstream.headers.get("Content-Type") or ""):
            ticket.fault(Fault("cut", "the file changed size between two requests"))
        self._copy_body(ticket, upstream, offset if total is not None else None, length)

    def _serve_kept(self, ticket: Ticket, offset: int) -> None:
        """Answer ``bytes=offset-`` from the kept bytes, asking the host only for what was never received."""
        cache = ticket.cache
        total = cache.total
        self.send_response(206)
        self.send_header("Content-Type", cache.content_type or "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Range", f"bytes {offset}-{total - 1}/{total}")
        self.send_header("Content-Length", str(total - offset))
        self.end_headers()
        while offset < total:
            chunk = cache.read(offset, _CHUNK)
            if not chunk:
                # A gap: ask the host from here on. Headers are sent, so a failure can only cut the body
                # (ffmpeg sees a short read; the window is judged by the fault recorded on the ticket).
                upstream, _ = _open_recorded(self.server, ticket, f"bytes={offset}-")
                if upstream is None:
                    return
                with upstream:
                    span = self._span_of(ticket, upstream)
                    if upstream.status != 206 or not span or int(span.group(1)) != offset:
                        ticket.fault(Fault("cut", "the host answered a range other than the one asked"))
                        return
                    if span.group(3) != str(total) or not cache.learn(total, ""):
                        ticket.fault(Fault("cut", "the file changed size between two requests"))
                        return
                    self._copy_body(ticket, upstream, offset, upstream.headers.get("Content-Length"))
                return
            try:
                self.wfile.write(chunk)
            except (BrokenPipeError, ConnectionResetError):
                return
            offset += len(chunk)

    def _copy_body(self, ticket: Ticket, upstream, offset: int | None, length: str | None) -> None:
        """Forward the body to ffmpeg, keeping what arrives (at ``offset``; None: nothing is kept)."""
        sent = 0
        waited = 0.0
        while True:
            began = time.monotonic()
            try:
                chunk = upstream.read(_CHUNK)
            except (OSError, ValueError) as exc:  # timeout, reset, IncompleteRead
                ticket.fault(Fault("cut", f"the transfer was interrupted ({type(exc).__name__})"))
                return
            spent = time.monotonic() - began
            waited += spent
            if not chunk:
                break
            with ticket.lock:
                ticket.bytes_in += len(chunk)
                ticket.read_s += spent
            if (
                ticket.min_bytes_per_s
                and waited >= _SLOW_GRACE_S
                and (sent + len(chunk)) / waited < ticket.min_bytes_per_s
            ):
                rate = (sent + len(chunk)) / waited / 1024
                ticket.fault(
                    Fault("slow", f"the host sends ranged reads at {rate:.0f} KiB/s (recipe fetch.min_section_kib_s)")
                )
                return  # cut: ffmpeg fails this window and the source falls back to streams
            if offset is not None:
                ticket.cache.add(offset + sent, chunk)
            try:
                self.wfile.write(chunk)
            except (BrokenPipeError, ConnectionResetError):
                return  # ffmpeg closes early after a seek: normal
            sent += len(chunk)
        if length is not None and sent < int(length):
            ticket.fault(Fault("cut", f"the body ended after {sent} of {length} bytes"))

    def _serve_file(self, path: Path, asked: str) -> None:
        size = path.stat().st_size
        start, end = 0, size - 1
        match = _RANGE.match(asked)
        if match and (match.group(1) or match.group(2)):
            if match.group(1):
                start = int(match.group(1))
                end = min(int(match.group(2)) if match.group(2) else size - 1, size - 1)
            else:
                start = max(size - int(match.group(2)), 0)
            if start >= size or start > end:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            self.send_response(200)
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        with path.open("rb") as handle:
            handle.seek(start)
            remaining = end - start + 1
            try:
                while remaining > 0 and (chunk := handle.read(min(_CHUNK, remaining))):
                    self.wfile.write(chunk)
                    remaining -= len(chunk)
            except (BrokenPipeError, ConnectionResetError):
                return


def _fetch_whole(server: MediaRelay, ticket: Ticket, upstream) -> Path | None:
    server.temp_dir.mkdir(parents=True, exist_ok=True)
    path = server.temp_dir / f"whole-{secrets.token_hex(8)}"
    length = upstream.headers.get("Content-Length")
    got = 0
    try:
        with path.open("wb") as handle:
            while True:
                began = time.monotonic()
                chunk = upstream.read(_CHUNK)
                if not chunk:
                    break
                got += len(chunk)
                with ticket.lock:
                    ticket.bytes_in += len(chunk)
                    ticket.read_s += time.monotonic() - began
                if got > server.max_whole_bytes:
                    ticket.fault(
                        Fault(
                            "too_large",
                            "the file to fetch whole (a host without Range, or fetch.strategy streams) is larger than the "
                            f"whole-file limit ({server.max_whole_bytes >> 20} MiB)",
                        )
                    )
                    path.unlink(missing_ok=True)
                    return None
                handle.write(chunk)
    except (OSError, ValueError) as exc:
        ticket.fault(Fault("cut", f"the transfer was interrupted ({type(exc).__name__})"))
        path.unlink(missing_ok=True)
        return None
    if length is not None and got < int(length):
        ticket.fault(Fault("cut", f"the body ended after {got} of {length} bytes"))
        path.unlink(missing_ok=True)
        return None
    return path


def _open_recorded(server: MediaRelay, ticket: Ticket, asked: str | None):
    """``(upstream, 0)``, or ``(None, status for ffmpeg)`` with the fault recorded on the ticket."""
    try:
        return server.open_upstream(ticket, asked), 0
    except urllib.error.HTTPError as exc:
        ticket.fault(
            Fault(
                "http_status",
                f"HTTP Error {exc.code}: {exc.reason}",
                exc.code,
                _retry_after(exc.headers.get("Retry-After") if exc.headers else None),
            )
        )
        return None, exc.code if 400 <= exc.code < 600 else 502
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        kind = "timeout" if isinstance(reason, (socket.timeout, TimeoutError)) else "connect"
        ticket.fault(Fault(kind, f"{'timed out' if kind == 'timeout' else 'connection failed'}: {reason}"))
        return None, 504 if kind == "timeout" else 502
