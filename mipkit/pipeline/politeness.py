"""The host gate: per-host politeness and the rate-limit breaker, shared by every fetch thread and worker process.

A *session* is what a host counts requests against: one IP address and one cookie set. All
workers of one machine share a session, so their limits live in one state file under
``OUT/build/politeness/`` guarded by a file lock. Under Ray each node is its own session (its own
IP) and gets its own state file. A file lock needs a local file system, so for an object-store
``OUT`` the state lives in the user's cache, named by a hash of the URL. The settings are recipe
data (``mipkit.config.politeness``).
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import socket
import threading
import time
from pathlib import Path

from filelock import FileLock

from mipkit.config.politeness import Politeness, canonical_host
from mipkit.core.paths import BUILD_DIR
from mipkit.core.storage import Location, as_location, local_state_dir

GATE_DIR = "politeness"  # inside OUT/build: one state file per machine
_HOUR_S = 3600.0
_POLL_S = 0.5  # how often a waiting fetch looks again (a trip or Ctrl-C elsewhere ends its wait)


class SessionBlocked(Exception):
    """The host's breaker tripped: no source may start there in this build run."""

    def __init__(self, host: str, limits: int):
        super().__init__(f"{host} answered {limits} rate limits in a row")
        self.host = host


def gate_home(out: Location | Path | str) -> Path:
    """The local folder whose ``politeness/`` holds the gate's state for the build at ``out``."""
    where = as_location(out)
    return where.local_path / BUILD_DIR if where.is_local else local_state_dir(where, "gates")


def _node_key() -> str:
    """One state file per machine (a session); hashed, so no host name lands in the build folder."""
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:12]


class HostGate:
    """Waits for a host's politeness, records rate limits and trips the breaker; state in one locked file.

    Every method reads and writes the state under the lock, so threads and processes see one
    session. Times are wall-clock (``time.time``): the same on every process of the machine.
    """

    def __init__(self, state_dir: Path, politeness: Politeness | None = None):
        self.politeness = politeness or Politeness()
        state_dir = Path(state_dir) / GATE_DIR
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

    def remember_strategy(self, url: str, strategy: str) -> None:
        """The fetch strategy ``url``'s host ended up with (``auto`` fell back): later sources start with it."""
        host = canonical_host(url)
        self._update(lambda state: state.setdefault(host, {}).update(fetch_strategy=strategy))

    def remembered_strategy(self, url: str) -> str:
        """What ``remember_strategy`` recorded for ``url``'s host in this build; "" if nothing."""
        host = canonical_host(url)
        return self._update(lambda state: state.get(host, {}).get("fetch_strategy", ""))

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
