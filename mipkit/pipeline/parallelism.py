"""How much runs at once, sized to the machine: printed at the start of every build."""

from __future__ import annotations

import os


def cores() -> int:
    return max(1, os.cpu_count() or 1)


def fetch_threads(configured: int) -> int:
    """Sources in flight per shard: extraction and transfers wait on the network, so twice the cores
    (at least 2); the CPU work (one ffmpeg per window) is capped at one per core separately."""
    return configured if configured > 0 else max(2, 2 * cores())


def describe(workers: int, configured_threads: int) -> str:
    threads = fetch_threads(configured_threads)
    how = "set by the recipe" if configured_threads > 0 else "sized to the machine"
    return (
        f"parallelism: {workers} shard worker(s) x {threads} sources in flight ({how}), "
        f"at most {cores()} window ffmpeg per worker; {cores()} cores"
    )
