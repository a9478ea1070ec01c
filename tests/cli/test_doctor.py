"""``mipkit doctor`` and the checks a build runs at start; cookies and proxies never show."""

from __future__ import annotations

import datetime as dt
import os
import re
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_manifest

from mipkit.media.checks import (
    MISSING,
    OK,
    WARNING,
    cookies_file_check,
    js_runtime_check,
    proxy_check,
    run_checks,
    ytdlp_check,
)
from mipkit.media.runtimes import RUNTIME_FIX, js_runtime_param, packaged_deno

COOKIE_SECRET = "c00kieS3cretValue"
PROXY_SECRET = "pr0xyPassw0rd"


def _mipkit(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mipkit", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "COLUMNS": "200", **(env or {})},
    )


def _plain(text: str) -> str:
    """A rich table as words: box drawing gone, whitespace collapsed."""
    return " ".join(re.sub(r"[\u2500-\u257f]", " ", text).split())


def _cookies_file(path: Path) -> Path:
    soon, past = int(time.time()) + 86400, int(time.time()) - 86400
    path.write_text(
        "# Netscape HTTP Cookie File\n"
        f".youtube.com\tTRUE\t/\tTRUE\t{soon}\tSID\t{COOKIE_SECRET}1\n"
        f"127.0.0.1\tFALSE\t/\tFALSE\t{soon}\tsession\t{COOKIE_SECRET}2\n"
        f".youtube.com\tTRUE\t/\tTRUE\t{past}\tOLD\t{COOKIE_SECRET}3\n"
    )
    return path


def _firefox_profile(folder: Path) -> Path:
    """A Firefox profile folder whose cookies.sqlite yt-dlp reads as it reads a real one."""
    folder.mkdir()
    with sqlite3.connect(folder / "cookies.sqlite") as db:
        db.execute(
            "CREATE TABLE moz_cookies (id INTEGER PRIMARY KEY, originAttributes TEXT DEFAULT '', name TEXT, value TEXT,"
            " host TEXT, path TEXT, expiry INTEGER, isSecure INTEGER)"
        )
        db.execute(
            "INSERT INTO moz_cookies (name, value, host, path, expiry, isSecure) VALUES (?, ?, ?, ?, ?, ?)",
            ("pref", COOKIE_SECRET + "ff", "127.0.0.1", "/", int(time.time()) + 86400, 0),
        )
    return folder


def test_doctor_names_a_missing_ffmpeg_with_its_fix_and_exits_non_zero(tmp_path):
    empty = tmp_path / "bin"
    empty.mkdir()
    result = _mipkit("doctor", env={"PATH": str(empty)})
    assert result.returncode == 1
    table = _plain(result.stdout)
    assert "ffmpeg missing" in table and "ffprobe missing" in table and "apt-get install ffmpeg" in table
    assert "missing: ffmpeg, ffprobe" in " ".join(result.stderr.split())
    ready = _mipkit("doctor")
    assert ready.returncode == 0 and "ready" in ready.stderr, ready.stdout


def test_a_build_without_ffmpeg_stops_at_start_with_the_fix(tmp_path, media_server):
    empty = tmp_path / "bin"
    empty.mkdir()
    manifest = write_manifest(tmp_path / "m.csv", [{"url": media_server.url("src0.mp4"), "start_s": 0}])
    result = _mipkit(
        "build", "mipnet", "--manifest", str(manifest), "--out", str(tmp_path / "ds"), env={"PATH": str(empty)}
    )
    assert result.returncode == 2
    assert (
        "ffmpeg missing" in result.stderr
        and "apt-get install ffmpeg" in result.stderr
        and "mipkit doctor" in result.stderr
    )
    assert not (tmp_path / "ds").exists()


def test_no_javascript_runtime_is_missing_with_its_fix(tmp_path):
    assert js_runtime_check(search_path=str(tmp_path), packaged=False) == type(js_runtime_check())(
        "JavaScript runtime", MISSING, fix=RUNTIME_FIX
    )
    old_node = tmp_path / "node"
    old_node.write_text("#!/bin/sh\necho v18.19.0\n")
    old_node.chmod(0o755)
    check = js_runtime_check(search_path=str(tmp_path), packaged=False)
    assert check.state == MISSING and "node 18.19.0: too old" in check.version
    checks = run_checks(search_path=str(tmp_path), packaged_runtime=False)
    assert [c.part for c in checks if c.failed] == ["ffmpeg", "ffprobe", "JavaScript runtime"]


def test_the_packaged_deno_is_found_and_yt_dlp_accepts_it():
    import yt_dlp

    path = packaged_deno()
    assert path and Path(path).is_file(), "the PyPI deno package is a dependency"
    version = subprocess.run([path, "--version"], capture_output=True, text=True, check=True).stdout.split()[1]
    check = js_runtime_check()
    assert check.state == OK and check.version == f"deno {version} (PyPI deno package)"
    param = js_runtime_param()
    assert param == {"deno": {"path": path}}
    with yt_dlp.YoutubeDL({"quiet": True, "js_runtimes": param}) as ydl:
        runtime = ydl._js_runtimes["deno"]
        assert runtime.info is not None and runtime.info.supported


def test_an_old_yt_dlp_is_a_warning_naming_its_age():
    assert ytdlp_check("2026.10.26", today=dt.date(2026, 12, 2)).state == OK
    old = ytdlp_check("2025.06.30", today=dt.date(2026, 12, 2))
    assert old.state == WARNING and "520 days old" in old.fix and "pip install -U" in old.fix and not old.failed


def test_doctor_counts_cookies_and_reaches_the_proxy_without_showing_either(tmp_path):
    cookies = _cookies_file(tmp_path / "my-cookies.txt")
    assert cookies_file_check(cookies).version == "3 cookies, 1 expired"
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    proxy = f"http://user:{PROXY_SECRET}@127.0.0.1:{listener.getsockname()[1]}"
    try:
        result = _mipkit("doctor", "--cookies", str(cookies), "--proxy", proxy)
    finally:
        listener.close()
    table = _plain(result.stdout)
    assert result.returncode == 0, result.stdout
    assert "3 cookies, 1 expired" in table and "http, reachable" in table
    unreachable = _mipkit("doctor", "--proxy", proxy)  # the listener is closed now
    assert unreachable.returncode == 1 and "not reachable" in _plain(unreachable.stdout)
    for output in (result.stdout + result.stderr, unreachable.stdout + unreachable.stderr):
        assert COOKIE_SECRET not in output and PROXY_SECRET not in output and "my-cookies" not in output
        assert str(tmp_path) not in output


def test_a_bad_cookies_file_or_proxy_is_missing_with_a_fix(tmp_path):
    junk = tmp_path / "junk.txt"
    junk.write_text("not a cookie jar\n")
    assert cookies_file_check(junk).state == MISSING and "Netscape" in cookies_file_check(junk).fix
    assert proxy_check("http://").state == MISSING


def test_cookies_from_browser_reach_yt_dlp_and_no_secret_lands_in_the_build(tmp_path, media_server):
    from mipkit.config.recipe import YtdlpConfig
    from mipkit.pipeline.fetch import _CollectingLogger, ytdlp_params

    profile = _firefox_profile(tmp_path / "ff-profile")
    spec = f"firefox:{profile}"
    assert ytdlp_params(YtdlpConfig(cookies_from_browser=spec), _CollectingLogger())["cookiesfrombrowser"] == (
        "firefox",
        str(profile),
        None,
        None,
    )
    cookies = _cookies_file(tmp_path / "my-cookies.txt")
    doctor = _mipkit("doctor", "--cookies-from-browser", spec)
    assert doctor.returncode == 0 and "firefox: 1 cookies, 0 expired" in _plain(doctor.stdout)
    manifest = write_manifest(tmp_path / "m.csv", [{"url": media_server.url("src0.mp4"), "start_s": 1.0}])
    out = tmp_path / "ds"
    built = _mipkit(
        "build",
        "mipnet",
        "--manifest",
        str(manifest),
        "--out",
        str(out),
        "--cookies",
        str(cookies),
        "--cookies-from-browser",
        spec,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    secrets = [COOKIE_SECRET, "ff-profile", "my-cookies"]  # values, the profile and the file, by name or in a path
    for output in (built.stdout, built.stderr, doctor.stdout, doctor.stderr):
        assert not [s for s in secrets if s in output]
    for path in out.rglob("*"):
        if path.is_file():
            data = path.read_bytes()
            assert not [s for s in [*secrets, str(tmp_path)] if s.encode() in data], path.relative_to(out)


@pytest.mark.parametrize(
    "flag, message",
    [
        (["--cookies-from-browser", "netscape"], "not a browser yt-dlp reads"),
        (["--politeness", "127.0.0.1:min_interval_s"], "expected HOST:key=value"),
    ],
)
def test_bad_fetch_flags_are_one_line_errors(tmp_path, media_server, flag, message):
    manifest = write_manifest(tmp_path / "m.csv", [{"url": media_server.url("src0.mp4"), "start_s": 0}])
    result = _mipkit("build", "mipnet", "--manifest", str(manifest), "--out", str(tmp_path / "ds"), *flag)
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1
