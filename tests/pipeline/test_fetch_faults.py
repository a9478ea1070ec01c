"""Issue 11 items 4, 5, 6 and 8: builds against a hostile host (``mipkit.demo.faultserver``) on 127.0.0.1.

Written against the code before the fixes as strict xfails naming their items; the fetch fast path
(media relay, one ffmpeg per window) made them plain tests. Two real builds (``python -m mipkit build mipnet``) run at once, so the
file costs about one build: the shared one holds every case as its own source (one alias URL per
fault), and the stall one runs beside it with a wall-clock cap.

Assumed interface for item 4: a recipe key ``fetch.socket_timeout_s`` (CLI ``--socket-timeout``)
bounds every network read, ffmpeg's HTTP input included; the recipe below sets it and also
``ytdlp.socket_timeout``, which exists today but does not reach ffmpeg.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from datasets import Audio, load_from_disk
from typer.testing import CliRunner

from mipkit.cli.app import app
from mipkit.demo.faultserver import (
    CloseMidBody,
    FaultServer,
    HttpError,
    IgnoreRange,
    ShortContentLength,
    StallBeforeHeaders,
    StallMidBody,
    file_scheme_page,
)
from mipkit.demo.synthetic_media import LUMA_BASE, LUMA_PER_S, make_video, spec_for_index

CLIP_S = 3.0
SOCKET_TIMEOUT_S = 2.0
STALL_CAP_S = 45.0  # the stall build must end by then (its stalls last 120 s)
RETRY_AFTER_S = 5.0
CUT_AT = 64 * 1024  # past what extraction and the probe read of one answer
# Extraction comes first; every media read after it faults. (The relay keeps what it received, so
# the 12-s file may need one media request in all: a fault skipping two would never fire.)
SKIP = 1

# Item 6: valid media of kinds that need seeking, 20 s long; start of the window asked of each.
NO_RANGE_MEDIA = {
    "ogg": ("media.ogg", 31, ["-c:v", "libtheora", "-q:v", "5", "-c:a", "libvorbis"]),
    "webm": (
        "media.webm",
        32,
        [
            "-c:v",
            "libvpx",
            "-deadline",
            "realtime",
            "-cpu-used",
            "8",
            "-lag-in-frames",
            "0",
            "-b:v",
            "50k",
            "-c:a",
            "libopus",
            "-b:a",
            "256k",
        ],
    ),
    "mkv": (
        "media.mkv",
        33,
        ["-c:v", "libx264", "-preset", "ultrafast", "-g", "20", "-c:a", "libopus", "-b:a", "256k"],
    ),
    "mp4-moov-at-end": ("end.mp4", 34, ["-c:v", "libx264", "-preset", "ultrafast", "-g", "20", "-c:a", "aac"]),
}
NO_RANGE_START = 12.0

runner = CliRunner()


def _encode(path: Path, index: int, codec: list[str], seconds: float = 20.0) -> None:
    """The synthetic_media picture and chirp in another container (no +faststart: an mp4 keeps moov at the end)."""
    spec = spec_for_index(index, seconds)
    chirp = f"{spec.amplitude}*sin(2*PI*({spec.f0}*t+{spec.sweep}*t*t/2))"
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"color=c=black:s=160x120:r=10:d={seconds}",
            "-f",
            "lavfi",
            "-i",
            f"aevalsrc=exprs={chirp}:s=44100:d={seconds}",
            "-vf",
            f"format=yuv420p,geq=lum='min(255,{LUMA_BASE}+{LUMA_PER_S}*T)':cb={spec.cb}:cr={spec.cr}",
            "-pix_fmt",
            "yuv420p",
            *codec,
            "-shortest",
            str(path),
        ],
        check=True,
    )


@pytest.fixture(scope="module")
def fault_media(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("fault-media")
    make_video(root / "a.mp4", spec_for_index(0, 12.0))
    for name, index, codec in NO_RANGE_MEDIA.values():
        _encode(root / name, index, codec)
    return root


def _recipe(folder: Path) -> Path:
    path = folder / "faults.toml"
    path.write_text(f"""[clip]
seconds = {CLIP_S}
[ytdlp]
extract_retries = 2
retry_backoff_s = 0.2
socket_timeout = {SOCKET_TIMEOUT_S}
[fetch]
socket_timeout_s = {SOCKET_TIMEOUT_S}
[shards]
sources_per_shard = 32
fetch_threads = 4
""")
    return path


def _start_build(cases: dict[str, tuple[str, float]], folder: Path) -> tuple[subprocess.Popen, Path]:
    manifest = folder / "manifest.csv"
    with manifest.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["url", "start_s", "emotion"])
        writer.writerows([url, start, "happy"] for url, start in cases.values())
    out = folder / "out"
    command = [
        sys.executable,
        "-m",
        "mipkit",
        "build",
        "mipnet",
        "-m",
        str(manifest),
        "-o",
        str(out),
        "--recipe",
        str(_recipe(folder)),
    ]
    # Its own session, so a hung build is killed with its ffmpeg children.
    process = subprocess.Popen(
        command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    return process, out


def _finish(process: subprocess.Popen, deadline: float) -> tuple[int | None, str]:
    """Exit code (None: killed at the deadline) and output of a build."""
    try:
        output, _ = process.communicate(timeout=max(deadline - time.monotonic(), 0.1))
        return process.returncode, output
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        return None, process.communicate()[0]


def _statuses(out: Path, cases: dict[str, tuple[str, float]]) -> dict[str, list[dict]]:
    result = runner.invoke(app, ["status", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    by_url = {url: name for name, (url, _) in cases.items()}
    found: dict[str, list[dict]] = {name: [] for name in cases}
    for entry in report["failed"]:
        found[by_url[entry["url"]]].append(entry)
    for name in cases:
        if not found[name]:
            found[name].append({"status": "ok", "error": ""})  # ok samples are counted, not listed
    return found


class _FifoWatch:
    """A named pipe that notes whether anything opened it for reading (a local file a page points at)."""

    def __init__(self, path: Path):
        self.path, self.opened, self._done = path, False, False
        os.mkfifo(path)
        self._thread = threading.Thread(target=self._wait, daemon=True)
        self._thread.start()

    def _wait(self) -> None:
        try:
            with open(self.path, "wb") as pipe:  # blocks until a reader opens the pipe
                if not self._done:
                    self.opened = True
                    pipe.write(b"\x00" * 4096)
        except OSError:
            pass

    def close(self) -> None:
        self._done = True
        os.close(os.open(self.path, os.O_RDONLY | os.O_NONBLOCK))  # releases the waiting writer
        self._thread.join(5)


@pytest.fixture(scope="module")
def fault_builds(fault_media, tmp_path_factory):
    """Run the stall build and the shared build at once; their statuses, exit codes and the request log."""
    secret = tmp_path_factory.mktemp("local")
    watch = _FifoWatch(secret / "private.mp4")
    with FaultServer(fault_media, max_stall_s=120) as server:
        stall_cases = {
            "clean": (server.url("a.mp4", fresh=True), 1.0),
            "stall mid-body": (
                server.url("a.mp4", StallMidBody(after_bytes=CUT_AT, seconds=120, skip_requests=SKIP)),
                1.0,
            ),
            "stall before headers": (server.url("a.mp4", StallBeforeHeaders(seconds=120, skip_requests=SKIP)), 1.0),
        }
        shared_cases = {
            "clean": (server.url("a.mp4", fresh=True), 1.0),
            "stall then close": (
                server.url("a.mp4", StallMidBody(after_bytes=CUT_AT, seconds=4, then_close=True, skip_requests=SKIP)),
                1.0,
            ),
            "cut mid-body": (server.url("a.mp4", CloseMidBody(after_bytes=CUT_AT, skip_requests=SKIP)), 1.0),
            # Every answer declares half its length: the window at 8-11 s of 12 lies in the half never sent.
            "short Content-Length": (server.url("a.mp4", ShortContentLength(fraction=0.5)), 8.0),
            "intermittent 500": (server.url("a.mp4", HttpError(500, every=3)), 1.0),
            **{f"HTTP {code}": (server.url("a.mp4", HttpError(code)), 1.0) for code in (502, 503, 504)},
            **{
                f"{code} with Retry-After": (
                    server.url("a.mp4", HttpError(code, times=1, retry_after=RETRY_AFTER_S)),
                    1.0,
                )
                for code in (503, 429)
            },
            **{
                f"no Range: {kind}": (server.url(name, IgnoreRange()), NO_RANGE_START)
                for kind, (name, _, _) in NO_RANGE_MEDIA.items()
            },
            "page with file:// to a local file": (
                server.add_page("local.html", file_scheme_page(str(watch.path))),
                1.0,
            ),
            "page with file:// to nothing": (
                server.add_page("nothing.html", file_scheme_page(str(secret / "absent.mp4"))),
                1.0,
            ),
        }
        stall_folder, shared_folder = tmp_path_factory.mktemp("stall-build"), tmp_path_factory.mktemp("shared-build")
        stall_started = time.monotonic()
        stall_process, stall_out = _start_build(stall_cases, stall_folder)
        shared_process, shared_out = _start_build(shared_cases, shared_folder)
        shared_code, shared_output = _finish(shared_process, time.monotonic() + 300)
        stall_code, _ = _finish(stall_process, stall_started + STALL_CAP_S)
        stall_seconds = time.monotonic() - stall_started
        log = {name: server.requests_for(url) for name, (url, _) in shared_cases.items()}
    watch.close()
    assert shared_code == 0, shared_output[-2000:]
    return {
        "shared": _statuses(shared_out, shared_cases),
        "shared_out": shared_out,
        "shared_cases": shared_cases,
        "media": fault_media,
        "log": log,
        "fifo_opened": watch.opened,
        "stall": _statuses(stall_out, stall_cases) if stall_code is not None else None,
        "stall_code": stall_code,
        "stall_seconds": stall_seconds,
        "secret": secret,
    }


def _only(entries: list[dict]) -> dict:
    assert len(entries) == 1, entries
    return entries[0]


def _status(entries: list[dict]) -> str:
    """The one status of a case, with its error text shown when an assertion on it fails."""
    entry = _only(entries)
    return f"{entry['status']}: {entry['error']}" if entry["error"] else entry["status"]


def test_the_clean_sources_build(fault_builds):
    assert _status(fault_builds["shared"]["clean"]) == "ok"


def test_a_stall_during_the_section_download_is_bounded(fault_builds):
    assert fault_builds["stall_code"] == 0, f"the build was still running after {STALL_CAP_S:g} s"
    statuses = fault_builds["stall"]
    assert _status(statuses["clean"]) == "ok"
    assert _status(statuses["stall before headers"]).startswith("network_error")
    # A stall mid-body times out the read; ffmpeg asks again from where it was (Range), so the window
    # may still complete, exact, within the bound: ok is as good as a retried network_error here.
    assert _status(statuses["stall mid-body"]).split(":")[0] in ("ok", "network_error")


def test_a_stall_then_a_close_is_a_network_error(fault_builds):
    # Never too_short: either the transfer is resumed by a ranged request (ok) or it is a retried network_error.
    assert _status(fault_builds["shared"]["stall then close"]).split(":")[0] in ("ok", "network_error")
    assert any(r.faults for r in fault_builds["log"]["stall then close"]), "the stall never fired"


@pytest.mark.parametrize("case", ["cut mid-body", "short Content-Length", "HTTP 502", "HTTP 503", "HTTP 504"])
def test_a_transfer_fault_is_a_retried_network_error(fault_builds, case):
    status = _status(fault_builds["shared"][case])
    if case in ("cut mid-body", "short Content-Length"):
        # ffmpeg asks again (Range) from where the cut or short answer stopped (the relay answers with the
        # true length, so a short answer is a cut), and the window may complete: ok is the best outcome
        # if the clip is the exact window; what must not happen is a permanent status.
        assert status.split(":")[0] in ("ok", "network_error"), status
    else:
        assert status.startswith("network_error")
    log = fault_builds["log"][case]
    if status == "ok":
        # The cut answer was one ffmpeg no longer needed, or it asked again (Range): either way the cut fired.
        assert any(record.faults for record in log), "the fault never fired"
        _assert_exact_clip(fault_builds, case)
        return
    # A 5xx answers the first request; a cut or short answer comes in the section download, after what a clean source asks.
    single_try = 1 if case.startswith("HTTP") else len(fault_builds["log"]["clean"])
    assert len(log) > single_try, "the failing transfer was not retried"


def _assert_exact_clip(fault_builds, case: str) -> None:
    """The case's clip is the window of a.mp4 decoded from the whole file, sample for sample."""
    url, start = fault_builds["shared_cases"][case]
    dataset = load_from_disk(str(fault_builds["shared_out"])).cast_column("audio", Audio(decode=False))
    rows = [row for split in dataset.values() for row in split if row["source_url"] == url]
    assert len(rows) == 1
    pcm, rate = sf.read(io.BytesIO(rows[0]["audio"]["bytes"]), dtype="float32")
    whole = ["ffmpeg", "-nostdin", "-v", "error", "-i", str(fault_builds["media"] / "a.mp4"), "-vn", "-ac", "1"]
    decoded = subprocess.run([*whole, "-ar", str(rate), "-f", "f32le", "pipe:1"], capture_output=True, check=True)
    first = int(round(start * rate))
    reference = np.frombuffer(decoded.stdout, dtype="<f4")[first : first + len(pcm)]
    assert len(pcm) == len(reference) and np.corrcoef(pcm, reference)[0, 1] > 0.999, "the clip is damaged"
    assert float(np.max(np.abs(pcm - reference))) < 0.02, "a stretch of the clip is damaged"


def test_an_intermittent_500_is_retried_to_success(fault_builds):
    assert _status(fault_builds["shared"]["intermittent 500"]) == "ok"


@pytest.mark.parametrize("code", [503, 429])
def test_retry_after_is_honoured(fault_builds, code):
    case = f"{code} with Retry-After"
    assert _status(fault_builds["shared"][case]) == "ok"
    refused, *later = fault_builds["log"][case]
    assert refused.status == code and later, "never asked again"
    assert later[0].t - refused.t >= RETRY_AFTER_S - 0.05, f"asked again after {later[0].t - refused.t:.2f} s"


@pytest.mark.parametrize("kind", list(NO_RANGE_MEDIA))
def test_valid_media_builds_from_a_server_without_range(fault_builds, kind):
    assert _status(fault_builds["shared"][f"no Range: {kind}"]) == "ok"
    name, index, _ = NO_RANGE_MEDIA[kind]
    dataset = load_from_disk(str(fault_builds["shared_out"])).cast_column("audio", Audio(decode=False))
    rows = [row for split in dataset.values() for row in split if row["source_url"].endswith("/" + name)]
    assert len(rows) == 1
    pcm, rate = sf.read(io.BytesIO(rows[0]["audio"]["bytes"]), dtype="float32")
    expected = spec_for_index(index, 20.0).expected_audio(NO_RANGE_START, CLIP_S, rate)
    assert np.corrcoef(pcm[: len(expected)], expected)[0, 1] > 0.9, "the clip is not the window asked for"


def test_file_urls_of_a_page_are_refused_without_a_hint(fault_builds):
    local = _only(fault_builds["shared"]["page with file:// to a local file"])
    absent = _only(fault_builds["shared"]["page with file:// to nothing"])
    assert not fault_builds["fifo_opened"], f"a local file named by a remote page was opened: {local} / {absent}"
    assert local["status"] == absent["status"] != "ok"
    assert local["error"].replace("private", "X") == absent["error"].replace("absent", "X"), (
        "the status tells the files apart"
    )
    assert "scheme" in local["error"].lower(), local["error"]
    for entry in (local, absent):
        assert str(fault_builds["secret"]) not in entry["error"]
