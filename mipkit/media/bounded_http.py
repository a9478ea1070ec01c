"""The relay's connections to the media host: receive buffers sized to the round trip.

A receive buffer holds what the host sent ahead of the reader; when ffmpeg closes a connection (it
seeks, or has what it needs) those bytes were fetched for nothing. A near host needs little in flight,
a far one needs its round trip's worth for the throughput, so each connection starts small and is
sized once the answer's headers show how long the trip takes.
"""

from __future__ import annotations

import http.client
import select
import socket
import time
import urllib.request

UPSTREAM_BUFFER = 128 * 1024  # about 20 Mbit/s in flight at a 50-ms round trip
# Each connection starts with this much: a far host's first round trip is held to less by TCP's initial
# congestion window anyway, and by the second the buffer is sized (``upstream_buffer``).
FIRST_UPSTREAM_BUFFER = 8 * 1024
_FULL_BUFFER_AT_S = 0.05


def _bounded_connection(address, timeout=socket._GLOBAL_DEFAULT_TIMEOUT, source_address=None, *args, **kwargs):
    """``socket.create_connection`` with a small receive buffer, set before connecting: the kernel would
    otherwise take megabytes ahead of what ffmpeg reads, and ffmpeg drops them when it seeks."""
    host, port = address
    error: OSError | None = None
    for family, kind, proto, _, where in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM):
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, FIRST_UPSTREAM_BUFFER)
            if timeout is not socket._GLOBAL_DEFAULT_TIMEOUT:
                sock.settimeout(timeout)
            if source_address:
                sock.bind(source_address)
            sock.connect(where)
            return sock
        except OSError as exc:
            error = exc
            sock.close()
    raise error or OSError(f"cannot resolve {host}")


def upstream_buffer(first_answer_s: float) -> int:
    """The receive buffer for a connection whose headers took ``first_answer_s`` (connect, proxy, TLS and
    the host's answer: never less than the round trip, so the throughput the buffer allows holds)."""
    return int(max(FIRST_UPSTREAM_BUFFER, UPSTREAM_BUFFER * min(1.0, first_answer_s / _FULL_BUFFER_AT_S)))


class _SizedBuffer:
    """Times a connection from connect to the answer's headers and then sizes its receive buffer."""

    def connect(self):
        self._began = time.monotonic()
        super().connect()

    def getresponse(self):
        sock = self.sock
        if sock is not None:
            # Wait for the answer's first byte (what getresponse would do), then size the buffer
            # before the body can fill it.
            select.select([sock], [], [], sock.gettimeout())
            took = time.monotonic() - getattr(self, "_began", time.monotonic())
            size = upstream_buffer(took)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
                if hasattr(socket, "TCP_WINDOW_CLAMP"):
                    # Some kernels clamp the window to the buffer set before connecting: lift it too.
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_WINDOW_CLAMP, 2 * size)
            except OSError:
                pass  # the small first buffer stays: slower, never wrong
        return super().getresponse()


class _BoundedHTTPConnection(_SizedBuffer, http.client.HTTPConnection):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._create_connection = _bounded_connection


class _BoundedHTTPSConnection(_SizedBuffer, http.client.HTTPSConnection):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._create_connection = _bounded_connection


class BoundedHTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req):
        return self.do_open(_BoundedHTTPConnection, req)


class BoundedHTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req):
        return self.do_open(_BoundedHTTPSConnection, req, context=self._context)
