"""Resume after a kill, the process pool and Ray engines, and CLI errors."""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
from conftest import small_recipe, write_manifest
from datasets import load_from_disk
from typer.testing import CliRunner

from mipkit.cli.app import app
from mipkit.kinds.pairs import BuildOptions, build

runner = CliRunner()


def _manifest(tmp_path, server, sources=3):
    rows = [{"url": server.url(f"src{i}.mp4"), "start_s": "", "emotion": "happy"} for i in range(sources)]
    return write_manifest(tmp_path / "m.csv", rows)


def _pair_ids(out):
    return sorted(pid for split in load_from_disk(str(out)).values() for pid in split["pair_id"])


def test_killed_shard_is_redone_without_duplicates(tmp_path, media_server):
    manifest = _manifest(tmp_path, media_server)
    recipe = small_recipe(**{"shards.sources_per_shard": 1, "clip.clips_per_source": 2})
    out = tmp_path / "ds"
    build(BuildOptions(manifest=manifest, out=out, recipe=recipe))
    complete = _pair_ids(out)
    assert len(complete) == 6
    # Simulate a kill in the middle of shard 1: its data written, its commit marker not.
    shard = out / "build" / "shards" / "00001"
    (shard / "stats.json").unlink()
    (shard / "pairs.parquet.tmp").write_bytes(b"truncated")
    (shard / "tmp" / "src1-x").mkdir(parents=True)
    (shard / "tmp" / "src1-x" / "src1__3.0.mp4.part").write_bytes(b"partial")
    summary = build(BuildOptions(manifest=manifest, out=out, recipe=recipe))
    assert _pair_ids(out) == complete
    assert summary["counts"] == {"ok": 6}
    assert not list(out.rglob("*.part")) and not list(out.rglob("*.tmp"))


def test_overwrite_and_changed_manifest(tmp_path, media_server):
    manifest = _manifest(tmp_path, media_server, sources=1)
    out = tmp_path / "ds"
    build(BuildOptions(manifest=manifest, out=out, recipe=small_recipe()))
    write_manifest(manifest, [{"url": media_server.url("src1.mp4"), "start_s": 2}])
    with pytest.raises(Exception, match="different manifest or recipe; pass --overwrite"):
        build(BuildOptions(manifest=manifest, out=out, recipe=small_recipe()))
    build(BuildOptions(manifest=manifest, out=out, recipe=small_recipe(), overwrite=True))
    assert [pid.split("_")[-1] for pid in _pair_ids(out)] == ["00002000"]


def test_process_pool_matches_serial(tmp_path, media_server):
    manifest = _manifest(tmp_path, media_server)
    recipe = small_recipe(**{"shards.sources_per_shard": 1})
    build(BuildOptions(manifest=manifest, out=tmp_path / "serial", recipe=recipe, workers=1))
    build(BuildOptions(manifest=manifest, out=tmp_path / "pool", recipe=recipe, workers=2))
    assert _pair_ids(tmp_path / "serial") == _pair_ids(tmp_path / "pool")


def test_ray_engine_runs_the_same_shards(tmp_path, media_server):
    pytest.importorskip("ray")
    manifest = _manifest(tmp_path, media_server, sources=2)
    recipe = small_recipe(**{"shards.sources_per_shard": 1})
    summary = build(BuildOptions(manifest=manifest, out=tmp_path / "ray", recipe=recipe, workers=2, engine="ray"))
    assert summary["counts"] == {"ok": 2} and summary["shards"] == {"done": 2, "total": 2}
    build(BuildOptions(manifest=manifest, out=tmp_path / "local", recipe=recipe))
    assert _pair_ids(tmp_path / "ray") == _pair_ids(tmp_path / "local")


def test_cli_build_and_errors(tmp_path, media_server):
    manifest = _manifest(tmp_path, media_server, sources=1)
    out = tmp_path / "cli"
    ok = runner.invoke(
        app,
        [
            "build",
            "mipnet",
            "--manifest",
            str(manifest),
            "--out",
            str(out),
            "--clips-per-source",
            "2",
            "--shard-size",
            "1",
        ],
    )
    assert ok.exit_code == 0, ok.output
    assert "pairs by split" in ok.stdout and len(_pair_ids(out)) == 2
    report = json.loads(runner.invoke(app, ["status", str(out), "--json"]).stdout)
    assert report["counts"] == {"ok": 2} and report["failed"] == []


def _run_cli(*args):
    """Run through main() so error handling (one line, exit code) is what users get."""
    import subprocess
    import sys

    return subprocess.run([sys.executable, "-m", "mipkit", *args], capture_output=True, text=True, timeout=300)


def test_cli_errors_are_one_line(tmp_path, media_server):
    missing = _run_cli("build", "mipnet", "--manifest", str(tmp_path / "nope.csv"), "--out", str(tmp_path / "o"))
    assert missing.returncode == 2 and missing.stderr.strip().count("\n") == 0
    assert "nope.csv" in missing.stderr and "does not exist" in missing.stderr
    dead = write_manifest(tmp_path / "dead.csv", [{"url": media_server.url("gone.mp4"), "start_s": 0}])
    nothing = _run_cli("build", "mipnet", "--manifest", str(dead), "--out", str(tmp_path / "o2"))
    assert nothing.returncode == 1 and "no pair could be built" in nothing.stderr
    (tmp_path / "a-file").write_text("x")
    out_is_file = _run_cli("build", "mipnet", "--manifest", str(dead), "--out", str(tmp_path / "a-file"))
    assert out_is_file.returncode == 2 and "is a file; pass a folder" in out_is_file.stderr
    not_a_build = _run_cli("status", str(tmp_path))
    assert not_a_build.returncode == 2 and "not a mipkit build folder" in not_a_build.stderr
    shutil.rmtree(tmp_path / "o2", ignore_errors=True)


def test_retry_failed_reopens_only_shards_with_transient_failures(tmp_path, media_server):
    import json as _json

    manifest = _manifest(tmp_path, media_server, sources=2)
    recipe = small_recipe(**{"shards.sources_per_shard": 1})
    out = tmp_path / "ds"
    build(BuildOptions(manifest=manifest, out=out, recipe=recipe))
    # Pretend shard 1 met a rate limit last time.
    status_file = out / "build" / "shards" / "00001" / "status.jsonl"
    record = _json.loads(status_file.read_text())
    status_file.write_text(_json.dumps({**record, "status": "rate_limited", "error": "HTTP Error 429"}) + "\n")
    untouched = (out / "build" / "shards" / "00000" / "stats.json").stat().st_mtime_ns
    summary = build(BuildOptions(manifest=manifest, out=out, recipe=recipe, retry_failed=True))
    assert summary["counts"] == {"ok": 2}
    assert (out / "build" / "shards" / "00000" / "stats.json").stat().st_mtime_ns == untouched


def test_label_with_refuses_missing_weights_before_building(tmp_path, media_server):
    manifest = _manifest(tmp_path, media_server, sources=1)
    result = _run_cli(
        "build", "mipnet", "--manifest", str(manifest), "--out", str(tmp_path / "o"), "--label-with", "passt"
    )
    assert result.returncode == 2 and "pass --weights FILE" in result.stderr
    assert not (tmp_path / "o").exists(), "nothing is fetched when the labeller cannot be made"


def test_splits_do_not_move_when_other_sources_come_back(tmp_path, media_dir):
    """Dead sources that later build (--retry-failed, resume) must not reshuffle the others.

    Fixed source ids make this deterministic: planning over the *built* sources would move keep1
    and keep2 once the late* sources build (checked with splits.assign_splits)."""
    import shutil as _shutil

    from mipkit.core.records import SourceRequest, Window
    from mipkit.demo.mediaserver import MediaServer

    served = tmp_path / "served"
    served.mkdir()
    for i in range(3):
        _shutil.copy(media_dir / f"src{i}.mp4", served / f"keep{i}.mp4")
    recipe = small_recipe(**{"shards.sources_per_shard": 1})
    with MediaServer(served) as server:
        names = [f"keep{i}" for i in range(3)] + [f"late{i}" for i in range(3)]

        def reader(taxonomy):
            return [SourceRequest(name, server.url(f"{name}.mp4"), [Window(1, 1.0)]) for name in names], []

        options = BuildOptions(out=tmp_path / "ds", recipe=recipe, reader=reader, inputs=[], kind="test")
        build(options)
        before = {pid: split for split, ds in load_from_disk(str(options.out)).items() for pid in ds["pair_id"]}
        assert len(before) == 3
        for i in range(3):
            _shutil.copy(media_dir / f"src{i}.mp4", served / f"late{i}.mp4")
        for record in (options.out / "build" / "shards").glob("*/stats.json"):
            if "unavailable" in record.read_text():
                record.unlink()  # as --retry-failed does for transient failures
        build(options)
    after = {pid: split for split, ds in load_from_disk(str(options.out)).items() for pid in ds["pair_id"]}
    assert len(after) == 6
    assert {pid: after[pid] for pid in before} == before


def test_ctrl_c_stops_a_pooled_build_and_the_rerun_completes(tmp_path, media_server):
    """SIGINT to the process group (what a terminal sends): queued shards are cancelled, and the
    same command run again builds exactly the missing shards."""
    import os
    import signal
    import subprocess
    import sys
    import time

    rows = [{"url": media_server.url(f"src{i % 4}.mp4"), "start_s": i} for i in range(12)]  # 4 sources = 4 shards
    manifest = write_manifest(tmp_path / "m.csv", rows)
    out = tmp_path / "ds"
    args = [
        sys.executable,
        "-m",
        "mipkit",
        "build",
        "mipnet",
        "--manifest",
        str(manifest),
        "--out",
        str(out),
        "--workers",
        "2",
        "--shard-size",
        "1",
        "--fetch-threads",
        "1",
        "--sleep",
        "1",
    ]
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    shards = out / "build" / "shards"
    deadline = time.time() + 120
    while time.time() < deadline and len(list(shards.glob("*/stats.json"))) < 2:
        time.sleep(0.2)
    os.killpg(process.pid, signal.SIGINT)
    _, stderr = process.communicate(timeout=60)
    assert process.returncode != 0 and "interrupted: what was committed is kept" in stderr
    committed = len(list(shards.glob("*/stats.json")))
    assert 2 <= committed < 4, "the build ran on after Ctrl-C"
    rerun = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert f"resuming: {committed} of 4 shards already done" in rerun.stderr
    ids = _pair_ids(out)
    assert len(ids) == len(set(ids)) == 12


def test_the_users_cookies_file_is_never_written(tmp_path, media_server):
    cookies = tmp_path / "cookies.txt"
    cookies.write_text("# Netscape HTTP Cookie File\n127.0.0.1\tFALSE\t/\tFALSE\t0\tsession\tabc\n")
    before = (cookies.read_bytes(), cookies.stat().st_mtime_ns)
    manifest = _manifest(tmp_path, media_server, sources=2)
    result = runner.invoke(
        app,
        [
            "build",
            "mipnet",
            "--manifest",
            str(manifest),
            "--out",
            str(tmp_path / "ds"),
            "--cookies",
            str(cookies),
            "--fetch-threads",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    assert (cookies.read_bytes(), cookies.stat().st_mtime_ns) == before
    assert "cookies.txt" not in result.output and "abc" not in result.output
    assert not list(Path(tempfile.gettempdir()).glob("mipkit-cookies-*"))


def test_a_killed_cookies_build_leaves_its_private_copy_only_in_the_locked_build_folder(tmp_path, media_server):
    # Issue 11 item 7: the private cookies copy lives in OUT/build/private (0600), never in the system temp
    # folder; the next run removes what a kill -9 left, and a finished run leaves nothing.
    import os
    import signal
    import subprocess
    import time

    secret = "s3cr3t-cookie-value"
    cookies = tmp_path / "cookies.txt"
    cookies.write_text(f"# Netscape HTTP Cookie File\n127.0.0.1\tFALSE\t/\tFALSE\t0\tsession\t{secret}\n")
    out = tmp_path / "ds"
    args = [sys.executable, "-m", "mipkit", "build", "mipnet", "--manifest", str(_manifest(tmp_path, media_server, 3))]
    args += ["--out", str(out), "--cookies", str(cookies), "--shard-size", "1", "--fetch-threads", "1", "--sleep", "5"]

    def in_temp() -> set[Path]:  # where scratch folders (mipkit-*) of the system temp folder would hold one
        return set(Path(tempfile.gettempdir()).glob("mipkit-*/**/cookies-*.txt"))

    temp_before = in_temp()
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    private = out / "build" / "private"
    copies: list[Path] = []
    deadline = time.time() + 120
    while time.time() < deadline and not copies:
        copies = list(private.rglob("cookies-*.txt")) if private.is_dir() else []
        time.sleep(0.1)
    os.killpg(process.pid, signal.SIGKILL)
    process.communicate()
    assert copies, "no private cookies copy appeared in OUT/build/private while the build ran"
    assert all(c.stat().st_mode & 0o777 == 0o600 for c in copies if c.exists())
    assert in_temp() == temp_before

    rerun = subprocess.run(args[:-2], capture_output=True, text=True, timeout=300)  # without --sleep
    assert rerun.returncode == 0, rerun.stderr
    assert not private.exists(), "the private area outlived the run"
    assert not any(
        secret in p.read_text(errors="ignore") for p in out.rglob("*") if p.is_file() and p.suffix != ".arrow"
    )
