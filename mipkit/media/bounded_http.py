"""Connections of the media relay to the host with a bounded receive buffer (see ``_bounded_connection``)."""

from __future__ import annotations

import http.client
import socket
import urllib.request

UPSTREAM_BUFFER = 128 * 1024  # about 20 Mbit/s in flight at a 50-ms round trip


def _bounded_connection(address, timeout=socket._GLOBAL_DEFAULT_TIMEOUT, source_address=None, *args, **kwargs):
    """``socket.create_connection`` with a bounded receive buffer, set before connecting (window scaling):
    the kernel would otherwise take megabytes ahead of what ffmpeg reads, and ffmpeg drops them when it seeks."""
    host, port = address
    error: OSError | None = None
    for family, kind, proto, _, where in socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM):
        sock = socket.socket(family, kind, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UPSTREAM_BUFFER)
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


class _BoundedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._create_connection = _bounded_connection


class _BoundedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._create_connection = _bounded_connection


class BoundedHTTPHandler(urllib.request.HTTPHandler):
    def http_open(self, req):
        return self.do_open(_BoundedHTTPConnection, req)


class BoundedHTTPSHandler(urllib.request.HTTPSHandler):
    def https_open(self, req):
        return self.do_open(_BoundedHTTPSConnection, req, context=self._context)
