"""A relay ticket (one remote media URL as ffmpeg sees it) and the transfer faults recorded on it."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path

from mipkit.media.spans import SpanCache


@dataclass
class Fault:
    kind: str  # "http_status", "cut", "timeout", "connect", "redirect", "too_large", "slow"
    message: str
    status: int = 0
    retry_after: float | None = None


@dataclass
class Ticket:
    """One remote media URL as ffmpeg sees it, with what went wrong fetching it."""

    url: str
    headers: dict[str, str]
    local_url: str = ""
    faults: list[Fault] = field(default_factory=list)
    bytes_in: int = 0
    read_s: float = 0.0  # time spent waiting on the host's body: bytes_in / read_s is its throughput
    whole_file: Path | None = None  # set when the host ignores Range, or by ``MediaRelay.fetch_whole``
    ignored_range: bool = False  # the host answered a Range request with the whole file
    # > 0: a ranged answer slower than this (bytes/s, after _SLOW_GRACE_S of waiting) is cut, fault "slow"
    min_bytes_per_s: float = 0.0
    cache: SpanCache = field(default_factory=SpanCache)
    lock: threading.Lock = field(default_factory=threading.Lock)
    whole_lock: threading.Lock = field(default_factory=threading.Lock)

    def fault(self, fault: Fault) -> None:
        with self.lock:
            self.faults.append(fault)
