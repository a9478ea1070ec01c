"""Per-host politeness and the rate-limit breaker, shared by every fetch thread and worker process.

A *session* is what a host counts requests against: one IP address and one cookie set. All
workers of one machine share a session, so their limits live in one state file under
``OUT/build/politeness/`` guarded by a file lock. Under Ray each node is its own session (its own
IP) and gets its own state file.

Recipe data (``[politeness.default]``, ``[politeness."youtube.com"]``; youtu.be and
googlevideo.com count as youtube.com)::

    min_interval_s     pause between the starts of two sources on the host
    jitter_s           a random extra pause in [0, jitter_s]
    max_per_hour       source starts per rolling hour (0 = no cap)
    sleep_requests_s   yt-dlp's sleep_interval_requests (between its HTTP requests)
    backoff_initial_s  first pause after a rate limit without Retry-After; doubles per limit in a row
    backoff_max_s      cap of that pause (and of Retry-After)
    breaker_after      rate limits in a row after which no new source starts on the host
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

from filelock import FileLock

from mipkit.errors import MipkitError

DEFAULT_HOST = "default"
YOUTUBE = "youtube.com"
# Hosts that share YouTube's session limits: the watch pages, short links and the media servers.
_YOUTUBE_DOMAINS = ("youtube.com", "youtu.be", "googlevideo.com", "youtube-nocookie.com", "ytimg.com")
_HOUR_S = 3600.0
_POLL_S = 0.5  # how often a waiting fetch looks again (a trip or Ctrl-C elsewhere ends its wait)


@dataclass(frozen=True)
class HostPoliteness:
    min_interval_s: float = 0.0
    jitter_s: float = 0.0
    max_per_hour: int = 0
    sleep_requests_s: float = 0.0
    backoff_initial_s: float = 60.0
    backoff_max_s: float = 3600.0
    breaker_after: int = 5

    def validate(self, where: str) -> None:
        for item in dataclasses.fields(self):
            if getattr(self, item.name) < 0:
                raise MipkitError(f"{where}: {item.name} must be >= 0")
        if self.breaker_after < 1:
            raise MipkitError(f"{where}: breaker_after must be >= 1")
        if self.backoff_max_s < self.backoff_initial_s:
            raise MipkitError(f"{where}: backoff_max_s must be >= backoff_initial_s")


# YouTube's own `-t sleep` preset, and its ~300 videos per hour per session.
YOUTUBE_SAFE = HostPoliteness(min_interval_s=6.0, jitter_s=4.0, max_per_hour=300, sleep_requests_s=0.75)
_KEYS = {item.name: item.type for item in dataclasses.fields(HostPoliteness)}


def canonical_host(url_or_host: str) -> str:
    """The host a session limit applies to: lower case, no ``www.``; every YouTube domain is youtube.com."""
    text = url_or_host.strip()
    host = (urlparse(text).hostname if "//" in text else text.split("/")[0].split(":")[0]) or ""
    host = host.lower().removeprefix("www.")
    if any(host == d or host.endswith("." + d) for d in _YOUTUBE_DOMAINS):
        return YOUTUBE
    return host


def _coerce(key: str, value, where: str):
    kind = int if _KEYS[key] in (int, "int") else float
    try:
        if isinstance(value, bool):
            raise ValueError
        number = kind(value)
    except (TypeError, ValueError):
        raise MipkitError(f"{where}: {key} must be a {'whole ' if kind is int else ''}number, not {value!r}") from None
    if kind is int and isinstance(value, float) and value != int(value):
        raise MipkitError(f"{where}: {key} must be a whole number, not {value!r}")
    return number


@dataclass(frozen=True)
class Politeness:
    """Settings per canonical host; ``default`` covers every host not listed."""

    hosts: dict[str, HostPoliteness] = field(
        default_factory=lambda: {DEFAULT_HOST: HostPoliteness(), YOUTUBE: YOUTUBE_SAFE}
    )

    @classmethod
    def from_raw(cls, raw: dict, where: str = "recipe") -> Politeness:
        """Parse the recipe's ``[politeness.*]`` tables; YouTube keeps its safe defaults unless set."""
        hosts = cls().hosts.copy()
        if not isinstance(raw, dict):
            raise MipkitError(f"{where} [politeness]: expected tables such as [politeness.default]")
        for name, values in raw.items():
            section = f"{where} [politeness.{name!r}]" if "." in name else f"{where} [politeness.{name}]"
            if not isinstance(values, dict):
                raise MipkitError(f"{section}: expected a table of {', '.join(_KEYS)}")
            unknown = sorted(set(values) - set(_KEYS))
            if unknown:
                raise MipkitError(f"{section}: unknown keys {unknown}; known keys: {sorted(_KEYS)}")
            key = DEFAULT_HOST if name == DEFAULT_HOST else canonical_host(name)
            base = hosts.get(key, hosts[DEFAULT_HOST] if key != YOUTUBE else YOUTUBE_SAFE)
            settings = dataclasses.replace(base, **{k: _coerce(k, v, section) for k, v in values.items()})
            settings.validate(section)
            hosts[key] = settings
        return cls(hosts)

    def with_override(self, spec: str) -> Politeness:
        """Apply one ``HOST:key=value`` (the ``--politeness`` flag)."""
        host, _, assignment = spec.partition(":")
        key, _, value = assignment.partition("=")
        where = f"--politeness {spec!r}"
        if not host or not key or not value:
            raise MipkitError(f"{where}: expected HOST:key=value, e.g. youtube.com:min_interval_s=10")
        if key not in _KEYS:
            raise MipkitError(f"{where}: unknown key {key!r}; known keys: {', '.join(_KEYS)}")
        name = DEFAULT_HOST if host == DEFAULT_HOST else canonical_host(host)
        settings = dataclasses.replace(self.for_host(name), **{key: _coerce(key, value, where)})
        settings.validate(where)
        return Politeness({**self.hosts, name: settings})

    def for_host(self, host: str) -> HostPoliteness:
        """Settings of a canonical host: its own entry, a listed parent domain's, else ``default``."""
        if host in self.hosts:
            return self.hosts[host]
        parents = [h for h in self.hosts if h != DEFAULT_HOST and host.endswith("." + h)]
        return self.hosts[max(parents, key=len)] if parents else self.hosts[DEFAULT_HOST]

    def for_url(self, url: str) -> HostPoliteness:
        return self.for_host(canonical_host(url))


class SessionBlocked(Exception):
    """The host's breaker tripped: no source may start there in this build run."""

    def __init__(self, host: str, limits: int):
        super().__init__(f"{host} answered {limits} rate limits in a row")
        self.host = host


def _node_key() -> str:
    """One state file per machine (a session); hashed, so no host name lands in the build folder."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:12]


class HostGate:
    """Waits for a host's politeness, records rate limits and trips the breaker; state in one locked file.

    Every method reads and writes the state under the lock, so threads and processes see one
    session. Times are wall-clock (``time.time``): the same on every process of the machine.
    """

    def __init__(self, state_dir: Path, politeness: Politeness):
        self.politeness = politeness
        state_dir = Path(state_dir) / "politeness"
        state_dir.mkdir(parents=True, exist_ok=True)
        self.path = state_dir / f"{_node_key()}.json"
        self._lock = FileLock(str(self.path) + ".lock")
        self._stop = threading.Event()

    def close(self) -> None:
        """End every wait now (Ctrl-C): a waiting fetch raises ``KeyboardInterrupt``."""
        self._stop.set()

    def _update(self, change):
        """Run ``change(state) -> result`` on the state under the lock and write it back."""
        with self._lock:
            try:
                state = json.loads(self.path.read_text()) if self.path.is_file() else {}
            except (json.JSONDecodeError, UnicodeDecodeError):
                state = {}  # a file cut by a crash: start again rather than fail every fetch
            result = change(state)
            tmp = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(state))
            os.replace(tmp, self.path)
        return result

    def _wait(self, url: str, start: bool) -> None:
        host = canonical_host(url)
        settings = self.politeness.for_host(host)

        def try_now(state: dict) -> float:
            entry = state.setdefault(host, {})
            if entry.get("tripped"):
                raise SessionBlocked(host, entry.get("consecutive", 0))
            now = time.time()
            waits = [entry.get("paused_until", 0.0) - now]
            if start:
                waits.append(entry.get("next_start", 0.0) - now)
                starts = [t for t in entry.get("starts", []) if t > now - _HOUR_S]
                if settings.max_per_hour and len(starts) >= settings.max_per_hour:
                    waits.append(starts[-settings.max_per_hour] + _HOUR_S - now)
                entry["starts"] = starts
            wait = max(waits)
            if wait <= 0 and start:
                entry["starts"].append(now)
                entry["next_start"] = now + settings.min_interval_s + random.uniform(0.0, settings.jitter_s)
            return wait

        while True:
            wait = self._update(try_now)
            if wait <= 0:
                return
            if self._stop.wait(min(wait, _POLL_S)):
                raise KeyboardInterrupt

    def start_source(self, url: str) -> None:
        """Block until a new source may start on ``url``'s host; ``SessionBlocked`` once its breaker tripped."""
        self._wait(url, start=True)

    def wait_clear(self, url: str) -> None:
        """Block while ``url``'s host is paused after a rate limit (a retry of a started source)."""
        self._wait(url, start=False)

    def rate_limited(self, url: str, retry_after: float | None = None) -> bool:
        """Record a rate-limit answer: pause the host for every worker. True when the breaker tripped."""
        host = canonical_host(url)
        settings = self.politeness.for_host(host)

        def record(state: dict) -> bool:
            entry = state.setdefault(host, {})
            entry["consecutive"] = entry.get("consecutive", 0) + 1
            entry["rate_limits"] = entry.get("rate_limits", 0) + 1
            if retry_after is not None:
                pause = min(max(retry_after, 0.0), settings.backoff_max_s)
            else:
                pause = min(settings.backoff_initial_s * 2 ** (entry["consecutive"] - 1), settings.backoff_max_s)
                pause *= random.uniform(0.8, 1.0)  # jitter, so workers do not come back at one instant
            entry["paused_until"] = max(entry.get("paused_until", 0.0), time.time() + pause)
            if entry["consecutive"] >= settings.breaker_after:
                entry["tripped"] = True
            return bool(entry.get("tripped"))

        return self._update(record)

    def answered(self, url: str) -> None:
        """The host answered without a rate limit: the run of rate limits is over."""
        host = canonical_host(url)
        self._update(lambda state: state.setdefault(host, {}).update(consecutive=0))

    def is_tripped(self, url: str) -> bool:
        host = canonical_host(url)
        return bool(self._update(lambda state: state.get(host, {}).get("tripped")))

    def tripped_hosts(self) -> list[str]:
        return sorted(self._update(lambda state: [host for host, entry in state.items() if entry.get("tripped")]))

    def reset_breakers(self) -> list[str]:
        """At the start of a run: trip marks and counts go, pauses and start times stay. Returns hosts that were tripped."""

        def reset(state: dict) -> list[str]:
            tripped = [host for host, entry in state.items() if entry.get("tripped")]
            for entry in state.values():
                entry["tripped"] = False
                entry["consecutive"] = 0
            return tripped

        tripped = []
        for path in sorted(self.path.parent.glob("*.json")):
            other = self if path == self.path else _gate_for_file(path, self.politeness)
            tripped += other._update(reset)
        return sorted(set(tripped))


def _gate_for_file(path: Path, politeness: Politeness) -> HostGate:
    gate = HostGate.__new__(HostGate)
    gate.politeness, gate.path = politeness, path
    gate._lock, gate._stop = FileLock(str(path) + ".lock"), threading.Event()
    return gate


def retry_after_of(exc: BaseException) -> float | None:
    """Seconds of an HTTP ``Retry-After`` carried by a yt-dlp error (its cause chain), else None."""
    seen, todo = set(), [exc]
    while todo:
        current = todo.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        response = getattr(current, "response", None)
        headers = getattr(response, "headers", None) or getattr(current, "headers", None)
        value = headers.get("Retry-After") if hasattr(headers, "get") else None
        if value:
            return _parse_retry_after(str(value))
        exc_info = getattr(current, "exc_info", None)
        todo += [getattr(current, "cause", None), current.__cause__, current.__context__,
                 exc_info[1] if isinstance(exc_info, tuple) and len(exc_info) > 1 else None]
    return None


def _parse_retry_after(value: str) -> float | None:
    """Retry-After is seconds or an HTTP date."""
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    from email.utils import parsedate_to_datetime

    try:
        return max(parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None
