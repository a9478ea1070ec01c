"""Pseudo id -> YouTube id through YouTube-8M's public lookup, cached on disk, retried, rate-limited.

``{base}/{id[:2]}/{id}.js`` answers JSONP ``i("nXSc","<youtubeId>");`` for a live video; dead and
private videos answer an error document (or 404): ``no_lookup``, cached like a hit so it is never
asked again. Transient failures (429, 5xx, timeouts) are retried with backoff and never cached.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from mipkit.core import records
from mipkit.core.ids import sanitize_id
from mipkit.kinds.yt8m import NO_LOOKUP

DEFAULT_LOOKUP_BASE = "http://data.yt8m.org/2/j/i"
_JSONP = re.compile(r'^\s*i\(\s*"([^"]*)"\s*,\s*"([A-Za-z0-9_-]{11})"\s*\)\s*;?\s*$')
_MAX_ANSWER = 64 * 1024


class DiskCache:
    """One small JSON file per key under ``root``; written to a temporary name and renamed, so a
    kill never leaves a half-written entry. Safe across threads and processes."""

    def __init__(self, root: Path):
        self.root = Path(root)

    def path_for(self, key: str) -> Path:
        # Keys (pseudo ids) are case-sensitive: the hash keeps "nXSc" and "nxsc" apart on
        # case-insensitive file systems; sanitize_id keeps any key a safe file name.
        safe = sanitize_id(key, 40)
        digest = hashlib.sha1(key.encode("utf-8")).hexdigest()[:10]
        return self.root / safe[:2] / f"{safe}-{digest}.json"

    def get(self, key: str) -> dict | None:
        path = self.path_for(key)
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None

    def put(self, key: str, value: dict) -> None:
        path = self.path_for(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.{os.getpid()}-{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(value, ensure_ascii=False), encoding="utf-8")
        os.replace(tmp, path)


class RateLimiter:
    """At most ``rate`` calls per second across the threads of a process (``rate <= 0``: no limit)."""

    def __init__(self, rate: float):
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self._lock = threading.Lock()
        self._next = 0.0

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next)
            self._next = slot + self.interval
        if slot > now:
            time.sleep(slot - now)


@dataclass
class LookupResult:
    status: str  # ok | no_lookup | rate_limited | network_error
    youtube_id: str | None = None
    error: str = ""
    cached: bool = False


class LookupClient:
    def __init__(
        self,
        base: str = DEFAULT_LOOKUP_BASE,
        cache: DiskCache | None = None,
        rate: float = 10.0,
        retries: int = 3,
        timeout: float = 15.0,
        backoff_s: float = 2.0,
    ):
        self.base = base.rstrip("/")
        self.cache = cache
        self.limiter = RateLimiter(rate)
        self.retries = retries
        self.timeout = timeout
        self.backoff_s = backoff_s

    def url_for(self, pseudo_id: str) -> str:
        return f"{self.base}/{quote(pseudo_id[:2], safe='')}/{quote(pseudo_id, safe='')}.js"

    def resolve(self, pseudo_id: str) -> LookupResult:
        if self.cache is not None:
            hit = self.cache.get(pseudo_id)
            if hit is not None and hit.get("status") in (records.OK, NO_LOOKUP):
                return LookupResult(hit["status"], hit.get("youtube_id"), hit.get("error", ""), cached=True)
        result = self._ask(pseudo_id)
        if self.cache is not None and result.status in (records.OK, NO_LOOKUP):
            self.cache.put(
                pseudo_id,
                {
                    "id": pseudo_id,
                    "status": result.status,
                    "youtube_id": result.youtube_id,
                    "error": result.error,
                    "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                },
            )
        return result

    def _ask(self, pseudo_id: str) -> LookupResult:
        url = self.url_for(pseudo_id)
        attempt = 0
        while True:
            self.limiter.wait()
            try:
                with urllib.request.urlopen(url, timeout=self.timeout) as response:
                    body = response.read(_MAX_ANSWER).decode("utf-8", "replace")
                return parse_answer(pseudo_id, body)
            except urllib.error.HTTPError as exc:
                if exc.code in (400, 403, 404, 410):
                    return LookupResult(
                        NO_LOOKUP, error=f"lookup answered HTTP {exc.code} (video removed, private or unknown)"
                    )
                status = records.RATE_LIMITED if exc.code == 429 else records.NETWORK_ERROR
                error = f"lookup answered HTTP {exc.code}"
            except (urllib.error.URLError, OSError) as exc:
                status = records.NETWORK_ERROR
                reason = getattr(exc, "reason", exc)
                error = f"lookup failed: {type(reason).__name__}: {reason}"[:200]
            if attempt >= self.retries:
                return LookupResult(status, error=f"{error} (after {attempt + 1} tries)")
            attempt += 1
            time.sleep(min(self.backoff_s * 2 ** (attempt - 1), 60.0))


def parse_answer(pseudo_id: str, body: str) -> LookupResult:
    """``i("nXSc","dQw4w9WgXcQ");`` -> ok; anything else is the error document of a dead video."""
    match = _JSONP.match(body)
    if match is None:
        preview = " ".join(body.split())[:100]
        return LookupResult(NO_LOOKUP, error=f"lookup answered an error document (dead or private video): {preview}")
    if match.group(1) != pseudo_id:
        return LookupResult(NO_LOOKUP, error=f"lookup answered for id {match.group(1)[:8]!r}, not {pseudo_id!r}")
    return LookupResult(records.OK, match.group(2))
