"""Politeness and the rate-limit breaker in real builds: yt-dlp and ffmpeg against the fault server on 127.0.0.1."""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import time

import pytest
from conftest import write_manifest

from mipkit.demo.faultserver import FaultServer, HttpError

pytestmark = pytest.mark.slow


@pytest.fixture
def fault_server(media_dir):
    with FaultServer(media_dir, max_stall_s=10) as server:
        yield server


def _mipkit(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mipkit", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "COLUMNS": "200"},
    )


def _build(manifest, out, *flags: str) -> subprocess.CompletedProcess:
    return _mipkit("build", "mipnet", "--manifest", str(manifest), "--out", str(out), *flags)


def _status(out) -> dict:
    return json.loads(_mipkit("status", str(out), "--json").stdout)


def _first_request_per_source(server: FaultServer, urls: list[str]) -> list[float]:
    return sorted(min(r.t for r in server.requests_for(url)) for url in urls)


def test_min_interval_holds_between_source_starts_across_two_workers(tmp_path, fault_server):
    urls = [fault_server.url(f"src{i}.mp4", fresh=True) for i in range(3)]
    manifest = write_manifest(tmp_path / "m.csv", [{"url": url, "start_s": 2.0} for url in urls])
    interval = 1.5
    done = _build(
        manifest,
        tmp_path / "ds",
        "--workers",
        "2",
        "--shard-size",
        "1",
        "--politeness",
        f"127.0.0.1:min_interval_s={interval}",
    )
    assert done.returncode == 0, done.stderr[-2000:]
    starts = _first_request_per_source(fault_server, urls)  # the server's clock, as the host sees it
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    # Between the gate and the request yt-dlp sets up (slower in a fresh worker): a few hundred ms of
    # jitter on a loaded machine; without the gate the starts would be milliseconds apart.
    assert len(starts) == 3 and min(gaps) >= interval - 0.5, gaps


def test_a_429_burst_is_waited_out_as_retry_after_says_and_completes(tmp_path, fault_server):
    urls = [fault_server.url(f"src{i}.mp4", HttpError(429, retry_after=1.0, times=2)) for i in range(2)]
    manifest = write_manifest(tmp_path / "m.csv", [{"url": url, "start_s": 2.0} for url in urls])
    done = _build(manifest, tmp_path / "ds", "--fetch-threads", "2")
    assert done.returncode == 0, done.stderr[-2000:]
    assert _status(tmp_path / "ds")["counts"] == {"ok": 2}
    for url in urls:
        log = fault_server.requests_for(url)
        refused = [r for r in log if r.status == 429]
        answered = [r for r in log if r.status != 429]
        assert len(refused) == 2 and answered
        assert answered[0].t - refused[-1].t >= 1.0 - 0.05  # Retry-After, not the 60-s default back-off


def test_a_429_storm_stops_with_exit_75_and_the_rerun_fetches_only_the_pending_sources(tmp_path, fault_server):
    good = [fault_server.url(f"src{i % 4}.mp4", fresh=True) for i in range(5)]
    stormy = fault_server.url("src1.mp4", HttpError(429))  # answers every request with 429
    urls = [good[0], stormy, *good[1:]]  # shards of 3: [good0, stormy, good1], [good2, good3, good4]
    manifest = write_manifest(tmp_path / "m.csv", [{"url": url, "start_s": 2.0} for url in urls])
    out = tmp_path / "ds"
    flags = [
        "--shard-size",
        "3",
        "--fetch-threads",
        "1",
        "--politeness",
        "127.0.0.1:breaker_after=3",
        "--politeness",
        "127.0.0.1:backoff_initial_s=0.05",
        "--politeness",
        "127.0.0.1:backoff_max_s=0.2",
    ]

    stopped = _build(manifest, out, *flags)
    assert stopped.returncode == 75, stopped.stderr[-2000:]
    line = " ".join(stopped.stderr.split())
    assert "127.0.0.1" in line and "4 source(s) left as pending" in line and "run the same command again" in line
    report = _status(out)
    # The stormy source was answered 429 on its last try (recipe: 2 retries); the four after it never started.
    assert report["counts"] == {"ok": 1, "pending": 4, "rate_limited": 1}
    assert report["shards"] == {"done": 0, "total": 2}  # both hold pending sources
    assert [f["status"] for f in report["failed"]] == ["rate_limited"]  # pending is not a failure
    assert len(fault_server.requests_for(stormy)) == 3
    assert all(not fault_server.requests_for(url) for url in good[1:])

    storm_over = time.monotonic()
    fault_server.clear_faults()
    resumed = _build(manifest, out, *flags)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert _status(out)["counts"] == {"ok": 5, "rate_limited": 1}
    assert all(r.t < storm_over for r in fault_server.requests_for(good[0]))  # the finished source is not fetched again
    retried = _build(manifest, out, *flags, "--retry-failed")
    assert retried.returncode == 0, retried.stderr[-2000:]
    assert _status(out)["counts"] == {"ok": 6}

    from datasets import load_from_disk

    ids = [pid for split in load_from_disk(str(out)).values() for pid in split["pair_id"]]
    assert len(ids) == len(set(ids)) == 6


def test_retry_failed_fetches_again_only_the_transient_failures_of_a_reopened_shard(tmp_path, fault_server):
    # Issue 11 item 5: a reopened shard keeps its ok samples; only the network_error source is fetched again.
    good = fault_server.url("src0.mp4", fresh=True)
    flaky = fault_server.url("src2.mp4", HttpError(503))  # every request fails until the faults are cleared
    manifest = write_manifest(tmp_path / "m.csv", [{"url": url, "start_s": 2.0} for url in (good, flaky)])
    out = tmp_path / "ds"
    flags = ["--shard-size", "2", "--fetch-threads", "1"]

    first = _build(manifest, out, *flags)
    assert first.returncode == 0, first.stderr[-2000:]
    assert _status(out)["counts"] == {"network_error": 1, "ok": 1}
    fault_server.clear_faults()
    requests_of_good = len(fault_server.requests_for(good))

    retried = _build(manifest, out, *flags, "--retry-failed")
    assert retried.returncode == 0, retried.stderr[-2000:]
    assert _status(out)["counts"] == {"ok": 2}
    assert len(fault_server.requests_for(good)) == requests_of_good, "the ok source was fetched again"
    assert fault_server.requests_for(flaky)[-1].status in (200, 206)

    from datasets import load_from_disk

    ids = [pid for split in load_from_disk(str(out)).values() for pid in split["pair_id"]]
    assert len(ids) == len(set(ids)) == 2
