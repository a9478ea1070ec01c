"""What the relay already received of one remote file, by byte offset, so it is not fetched twice.

ffmpeg opens one URL many times per source: every input reads the container header from byte 0
(an mp4's moov atom, or its end for moov-at-the-end files), every window seeks again, and windows
of one source overlap. Each read is an open-ended ``Range: bytes=N-`` request, and what sat in the
socket buffers when ffmpeg closed it was received and then dropped. The relay keeps every byte it
received (up to a memory cap) and answers a later request from here, asking the host only for the
bytes it never had (``docs/benchmarks.md``, "Build throughput side by side": the byte attribution).
"""

from __future__ import annotations

import threading

CACHE_BYTES = 16 << 20  # per remote file; a window of a 480p source reads about 2 MB


class SpanCache:
    """Contiguous spans of one file's bytes; thread-safe (a window's two inputs read at once)."""

    def __init__(self, cap: int = CACHE_BYTES):
        self.cap = cap
        self.total: int | None = None  # the file's size, from the host's Content-Range
        self.content_type = ""
        self._spans: dict[int, bytearray] = {}  # start -> bytes; insertion order = age
        self._held = 0
        self._lock = threading.Lock()

    def learn(self, total: int | None, content_type: str) -> bool:
        """Record the file's size; False (and the cache emptied) when it differs from the size seen
        before: the host now serves another file under this URL, and no byte kept belongs to it."""
        with self._lock:
            changed = self.total is not None and total != self.total
            if changed:
                self._spans.clear()
                self._held = 0
            self.total = total
            self.content_type = self.content_type or content_type
            return not changed

    def read(self, offset: int, limit: int) -> bytes:
        """Up to ``limit`` kept bytes from ``offset`` on; b"" when the byte at ``offset`` was never received."""
        with self._lock:
            best = b""
            for start, data in self._spans.items():
                if start <= offset < start + len(data):
                    piece = data[offset - start : offset - start + limit]
                    if len(piece) > len(best):
                        best = piece
            return bytes(best)

    def add(self, offset: int, data: bytes) -> None:
        """Keep ``data`` received at ``offset`` (extending the span that ends there, if any)."""
        if not data:
            return
        with self._lock:
            for start, span in self._spans.items():
                if start <= offset <= start + len(span):
                    fresh = data[start + len(span) - offset :]
                    if not fresh or not self._room(len(fresh), keep=start):
                        return
                    span += fresh
                    self._held += len(fresh)
                    return
            if self._room(len(data), keep=None):
                self._spans[offset] = bytearray(data)
                self._held += len(data)

    def _room(self, size: int, keep: int | None) -> bool:
        """Make room for ``size`` bytes by dropping the oldest spans (never ``keep``, nor the file's head,
        which every input reads); False when there is none."""
        for start in list(self._spans):
            if self._held + size <= self.cap:
                break
            if start not in (keep, 0):
                self._held -= len(self._spans.pop(start))
        return self._held + size <= self.cap
