"""A small HTTP file server on 127.0.0.1 with Range support and a byte counter.

It stands in for a media host in the offline demo, the tests and the benchmarks: yt-dlp's generic
extractor and ffmpeg fetch from it exactly as they fetch from a real server, Range requests included
(Python's ``http.server`` ignores Range, which would hide whether only a section was read).
"""

from __future__ import annotations

import os
import re
import socket
import threading
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

_RANGE = re.compile(r"bytes=(\d*)-(\d*)$")


class _Handler(SimpleHTTPRequestHandler):
    server: MediaServer

    def log_message(self, format, *args):  # noqa: A002 - quiet: this is a test/demo fixture
        return

    def setup(self):
        super().setup()
        # A small send buffer keeps bytes_sent close to what the client really read: readers such
        # as ffmpeg open ranges to the end of the file and close the socket once they have enough.
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 32 * 1024)

    def send_head(self):
        path = Path(self.translate_path(self.path))
        if not path.is_file():
            self.send_error(HTTPStatus.NOT_FOUND, "File not found")
            return None
        size = path.stat().st_size
        start, end = 0, size - 1
        match = _RANGE.match(self.headers.get("Range", "").strip())
        if match and (match.group(1) or match.group(2)):
            if match.group(1):
                start = int(match.group(1))
                end = int(match.group(2)) if match.group(2) else size - 1
            else:  # suffix range: the last N bytes
                start = max(size - int(match.group(2)), 0)
            end = min(end, size - 1)
            if start >= size or start > end:
                self.send_response(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE)
                self.send_header("Content-Range", f"bytes */{size}")
                self.end_headers()
                return None
            self.send_response(HTTPStatus.PARTIAL_CONTENT)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", self.guess_type(str(path)))
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        self.end_headers()
        self._range = (start, end)
        handle = path.open("rb")
        handle.seek(start)
        return handle

    def copyfile(self, source, outputfile):
        remaining = self._range[1] - self._range[0] + 1
        while remaining > 0:
            chunk = source.read(min(64 * 1024, remaining))
            if not chunk:
                break
            try:
                outputfile.write(chunk)
            except (BrokenPipeError, ConnectionResetError):
                break  # clients (ffmpeg) close early after a seek: normal
            remaining -= len(chunk)
            self.server.add_bytes(len(chunk))


class MediaServer(ThreadingHTTPServer):
    """Serve ``root`` on 127.0.0.1 in a background thread; use as a context manager."""

    daemon_threads = True

    def __init__(self, root: str | os.PathLike, port: int = 0):
        self.root = str(root)
        handler = lambda *a, **kw: _Handler(*a, directory=self.root, **kw)  # noqa: E731
        super().__init__(("127.0.0.1", port), handler)
        self._lock = threading.Lock()
        self.bytes_sent = 0
        self._thread: threading.Thread | None = None

    def add_bytes(self, n: int) -> None:
        with self._lock:
            self.bytes_sent += n

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"

    def start(self) -> MediaServer:
        self._thread = threading.Thread(target=self.serve_forever, name="mipkit-media-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()

    def __enter__(self) -> MediaServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def main() -> None:
    """``python -m mipkit.demo.mediaserver ROOT``: serve ROOT; the first stdout line is the base URL."""
    import sys

    if len(sys.argv) != 2 or not Path(sys.argv[1]).is_dir():
        sys.exit("usage: python -m mipkit.demo.mediaserver FOLDER  (serves FOLDER on 127.0.0.1; prints the base URL)")
    server = MediaServer(sys.argv[1])
    print(server.base_url, flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
