"""A plain-HTTP forward proxy on 127.0.0.1 that logs what passes through it (for the proxy tests)."""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


class _ProxyHandler(BaseHTTPRequestHandler):
    server: ForwardProxy

    def log_message(self, format, *args):  # noqa: A002
        return

    def do_GET(self):  # noqa: N802
        target = urlsplit(self.path)
        if target.scheme != "http" or not target.hostname:
            self.send_error(400, "absolute http URL expected")
            return
        headers = {
            k: v for k, v in self.headers.items() if not k.lower().startswith("proxy-") and k.lower() != "connection"
        }
        with self.server.lock:
            self.server.seen.append(
                {"url": self.path, "headers": headers, "auth": self.headers.get("Proxy-Authorization", "")}
            )
        connection = http.client.HTTPConnection(target.hostname, target.port or 80, timeout=30)
        try:
            connection.request("GET", target.path + (f"?{target.query}" if target.query else ""), headers=headers)
            answer = connection.getresponse()
            self.send_response(answer.status)
            for key, value in answer.getheaders():
                if key.lower() not in ("connection", "transfer-encoding"):
                    self.send_header(key, value)
            self.send_header("Connection", "close")
            self.end_headers()
            while chunk := answer.read(64 * 1024):
                self.wfile.write(chunk)
        except OSError:
            return
        finally:
            connection.close()


class ForwardProxy(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _ProxyHandler)
        self.seen: list[dict] = []
        self.lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def __enter__(self) -> ForwardProxy:
        threading.Thread(target=self.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()
        self.server_close()
