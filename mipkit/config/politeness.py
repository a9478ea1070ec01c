"""Per-host politeness settings, as recipe data; ``mipkit.pipeline.politeness`` enforces them.

A *session* is what a host counts requests against: one IP address and one cookie set.

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
from dataclasses import dataclass, field
from urllib.parse import urlparse

from mipkit.core.errors import MipkitError

DEFAULT_HOST = "default"
YOUTUBE = "youtube.com"
# Hosts that share YouTube's session limits: the watch pages, short links and the media servers.
_YOUTUBE_DOMAINS = ("youtube.com", "youtu.be", "googlevideo.com", "youtube-nocookie.com", "ytimg.com")


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
