"""Every writing command: it deletes only what it wrote, one run writes a folder at a time, a killed
run's leftovers go, and Ctrl-C always says how to resume (issue 11, items 1, 2, 13 and 14)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from datasets import load_from_disk
from typer.testing import CliRunner

from mipkit.cli.app import app
from mipkit.core.errors import MipkitError
from tests.helpers.inputs import REPO_ID, manifest_of, segments_csv, yt8m_args_with_an_empty_split

runner = CliRunner()


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _foreign_folder(folder: Path) -> dict[str, bytes]:
    """A user's folder that happens to have the names a build uses."""
    for name in ("train", "build", "data"):
        (folder / name).mkdir(parents=True)
        (folder / name / "mine.txt").write_text(f"the user's {name} notes")
    (folder / "README.md").write_text("my own project")
    return _snapshot(folder)


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mipkit", *args], capture_output=True, text=True, timeout=timeout)


# --- item 1: a folder mipkit did not write is refused, whatever the command -------------------------------------------


def _writing_command(command: str, tmp_path: Path, server, built: Path, target: Path) -> list[str]:
    from mipkit.release.publish import export_to_folder

    if command.startswith("build mipnet"):
        return [
            "build",
            "mipnet",
            "--manifest",
            str(manifest_of(tmp_path, server)),
            "--out",
            str(target),
            *command.split()[2:],
        ]
    if command == "build audioset-mood":
        return [
            "build",
            "audioset-mood",
            "--segments",
            str(segments_csv(tmp_path, ["src0"])),
            "--out",
            str(target),
            "--url-template",
            server.url("{id}.mp4"),
        ]
    if command == "build yt8m-title":
        return [
            "build",
            "yt8m-title",
            *yt8m_args_with_an_empty_split(tmp_path / "yt8m"),
            "--out",
            str(target),
            "--overwrite",
        ]
    if command == "hydrate":
        export_to_folder(built, tmp_path / "release", REPO_ID, metadata_only=True)
        return ["hydrate", str(tmp_path / "release"), "--out", str(target), "--overwrite"]
    if command == "push-to-hub --to-folder":
        return ["push-to-hub", str(built), REPO_ID, "--to-folder", str(target)]
    return ["label", str(built), "--out", str(target), "--preset", "tiny", "--allow-random-weights", "--device", "cpu"]


COMMANDS = [
    "build mipnet",
    "build mipnet --overwrite",
    "build audioset-mood",
    "build yt8m-title",
    "hydrate",
    "push-to-hub --to-folder",
    "label --out",
]


@pytest.mark.parametrize("command", COMMANDS)
def test_a_folder_mipkit_did_not_write_is_refused_and_left_as_it_was(command, tmp_path, media_server, built_dataset):
    target = tmp_path / "mine"
    before = _foreign_folder(target)
    result = runner.invoke(app, _writing_command(command, tmp_path, media_server, built_dataset[0], target))
    assert isinstance(result.exception, MipkitError), (result.output, result.exception)
    assert "'mine'" in str(result.exception) and "mipkit did not write" in str(result.exception)
    assert _snapshot(target) == before


def test_a_release_folder_is_replaced_only_when_mipkit_wrote_it(tmp_path, built_dataset):
    from mipkit.release.publish import export_to_folder

    mine = tmp_path / "mine"  # the Hub layout, but the user's own files
    (mine / "data").mkdir(parents=True)
    (mine / "README.md").write_text("my card")
    (mine / "data" / "train-00000-of-00001.parquet").write_bytes(b"my data")
    before = _snapshot(mine)
    with pytest.raises(MipkitError, match="'mine' holds files mipkit did not write"):
        export_to_folder(built_dataset[0], mine, REPO_ID)
    assert _snapshot(mine) == before
    ours = tmp_path / "release"
    export_to_folder(built_dataset[0], ours, REPO_ID, metadata_only=True)
    export_to_folder(built_dataset[0], ours, REPO_ID)  # an earlier release of ours is replaced
    import pyarrow.parquet as pq

    assert "image" in pq.read_schema(ours / "data" / "train-00000-of-00001.parquet").names  # the full release now


def test_label_in_place_never_drops_a_file_it_did_not_write(tmp_path, built_dataset):
    import shutil

    copy = tmp_path / "ds"
    shutil.copytree(built_dataset[0], copy)
    (copy / "train" / "notes.txt").write_text("the user's notes")
    result = runner.invoke(app, ["label", str(copy), "--preset", "tiny", "--allow-random-weights", "--device", "cpu"])
    assert isinstance(result.exception, MipkitError) and "notes.txt" in str(result.exception), result.output
    assert (copy / "train" / "notes.txt").read_text() == "the user's notes"


def test_the_refusal_is_one_line_from_the_real_cli(tmp_path, media_server):
    target = tmp_path / "mine"
    before = _foreign_folder(target)
    result = _cli(
        "build", "mipnet", "--manifest", str(manifest_of(tmp_path, media_server)), "--out", str(target), "--overwrite"
    )
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "choose a new or empty --out" in result.stderr and str(tmp_path) not in result.stderr
    assert _snapshot(target) == before


def test_a_split_folder_a_user_added_to_a_build_is_not_replaced(tmp_path, media_server):
    """The build owns its folder, but not a split folder the user put there before it was assembled."""
    from conftest import small_recipe

    from mipkit.kinds.pairs import BuildOptions, build

    out = tmp_path / "ds"
    options = BuildOptions(manifest=manifest_of(tmp_path, media_server), out=out, recipe=small_recipe())
    build(options)
    (out / "validation").rename(tmp_path / "taken")
    (out / "validation").mkdir()
    (out / "validation" / "mine.txt").write_text("keep")
    with pytest.raises(MipkitError, match="'validation'.*mipkit did not write"):
        build(options)
    assert (out / "validation" / "mine.txt").read_text() == "keep"


def test_a_build_from_before_the_markers_resumes_but_nothing_else_takes_it(
    tmp_path, built_dataset, standard_manifest, media_server
):
    import shutil

    from conftest import standard_build_options

    from mipkit.core.ownership import MARKER, ForeignFolderError
    from mipkit.kinds.pairs import build
    from mipkit.release.publish import export_to_folder

    legacy = tmp_path / "ds"
    shutil.copytree(built_dataset[0], legacy)
    for marker in legacy.rglob(MARKER):
        marker.unlink()
    before = _snapshot(legacy)
    with pytest.raises(ForeignFolderError):
        export_to_folder(built_dataset[0], legacy, REPO_ID)  # a release may not replace a build
    assert _snapshot(legacy) == before
    summary = build(standard_build_options(standard_manifest, media_server, legacy))
    assert summary["shards"]["done"] == summary["shards"]["total"] and (legacy / "train" / MARKER).is_file()


# --- item 2: one writer per output folder -------------------------------------------------------------------------------


def test_a_second_run_is_refused_naming_the_holder_and_a_killed_holders_lock_is_taken_over(tmp_path, media_server):
    manifest = manifest_of(tmp_path, media_server, sources=2)
    out = tmp_path / "ds"
    args = [
        "build",
        "mipnet",
        "--manifest",
        str(manifest),
        "--out",
        str(out),
        "--shard-size",
        "1",
        "--fetch-threads",
        "1",
    ]
    first = subprocess.Popen(
        [sys.executable, "-m", "mipkit", *args, "--sleep", "30"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (out / "build" / "build.json").is_file():
            time.sleep(0.2)
        assert (out / "build" / "build.json").is_file(), "the first run never started"
        second = _cli(*args)
        assert second.returncode == 2 and len(second.stderr.strip().splitlines()) == 1, second.stderr
        assert f"PID {first.pid} on {socket.gethostname()}" in second.stderr
        labelling = _cli("label", str(out), "--preset", "tiny", "--allow-random-weights")
        assert labelling.returncode == 2 and f"PID {first.pid}" in labelling.stderr, labelling.stderr
    finally:
        first.kill()  # kill -9: the lock is left behind
        first.wait()
    again = _cli(*args)
    assert again.returncode == 0, again.stderr
    ids = [pid for split in load_from_disk(str(out)).values() for pid in split["pair_id"]]
    assert len(ids) == len(set(ids)) == 2


def test_a_shard_that_hits_an_internal_error_is_not_committed(tmp_path, media_server, monkeypatch):
    from conftest import small_recipe

    import mipkit.pipeline.shard
    from mipkit.kinds.pairs import BuildOptions, build

    real = mipkit.pipeline.shard.build_source

    def flaky(request, recipe, work, *gate):
        if request.url.endswith("src1.mp4"):
            raise RuntimeError("simulated bug")
        return real(request, recipe, work, *gate)

    monkeypatch.setattr(mipkit.pipeline.shard, "build_source", flaky)
    options = BuildOptions(
        manifest=manifest_of(tmp_path, media_server, sources=3),
        out=tmp_path / "ds",
        recipe=small_recipe(**{"shards.sources_per_shard": 1}),
    )
    summary = build(options)
    assert summary["counts"] == {"ok": 2} and summary["shards"] == {"done": 2, "total": 3}
    assert len(summary["shard_errors"]) == 1 and "RuntimeError: simulated bug" in summary["shard_errors"][0]
    assert not (tmp_path / "ds" / "build" / "shards" / "00001" / "stats.json").exists()
    monkeypatch.setattr(mipkit.pipeline.shard, "build_source", real)  # the bug is fixed: the rerun builds the shard
    assert build(options)["counts"] == {"ok": 3}


# --- item 13: leftovers of a killed push-to-hub --to-folder ---------------------------------------------------------------

_KILLED_EXPORT = """
import os, sys
import mipkit.release.publish as publish
real = publish._write_split
def write_then_die(*args, **kwargs):
    real(*args, **kwargs)
    os.kill(os.getpid(), 9)
publish._write_split = write_then_die
publish.export_to_folder(sys.argv[1], sys.argv[2], "someorg/mipnet-tiny")
"""


def test_stale_staging_folders_of_a_killed_export_are_removed_by_the_next_run(tmp_path, built_dataset):
    from mipkit.release.publish import export_to_folder

    target = tmp_path / "release"
    killed = subprocess.run(
        [sys.executable, "-c", _KILLED_EXPORT, str(built_dataset[0]), str(target)], capture_output=True, timeout=300
    )
    assert killed.returncode == -9, killed.stderr
    leftovers = list(tmp_path.glob(".release.partial-*"))
    assert len(leftovers) == 1 and list(leftovers[0].rglob("*.parquet"))
    alive = tmp_path / f".release.partial-{os.getppid()}"  # a run still writing: not touched
    alive.mkdir()
    foreign = tmp_path / ".release.partial-999999999"  # someone else's folder of that name: not touched
    foreign.mkdir()
    (foreign / "mine.txt").write_text("keep")
    export_to_folder(built_dataset[0], target, REPO_ID)
    assert sorted(p.name for p in tmp_path.glob(".release.partial-*")) == sorted([alive.name, foreign.name])
    assert (foreign / "mine.txt").read_text() == "keep"


# --- item 14: Ctrl-C in any long command prints how to resume -----------------------------------------------------------


class StallingServer:
    """Accepts connections and never answers: a command reading from it waits until interrupted."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.socket.getsockname()[1]}"
        self.connected = threading.Event()
        self.held: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            self.held.append(connection)
            self.connected.set()

    def close(self) -> None:
        for connection in self.held:
            connection.close()
        self.socket.close()


@pytest.mark.parametrize("command", ["build yt8m-title", "build audioset-mood"])
def test_ctrl_c_prints_the_resume_hint_outside_build_mipnet(command, tmp_path):
    server = StallingServer()
    try:
        out = tmp_path / "out"
        if command == "build yt8m-title":
            args = [
                "build",
                "yt8m-title",
                "--tfrecords",
                f"{server.url}/train0000.tfrecord",
                "--out",
                str(out),
                "--lookup-base",
                server.url,
                "--cache-dir",
                str(tmp_path / "cache"),
            ]
        else:
            args = ["build", "audioset-mood", "--segments", f"{server.url}/segments.csv", "--out", str(out)]
        env = {**os.environ, "MIPKIT_CACHE": str(tmp_path / "cache")}
        process = subprocess.Popen(
            [sys.executable, "-m", "mipkit", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            start_new_session=True,
        )
        assert server.connected.wait(120), "the command never reached the server"
        os.killpg(process.pid, signal.SIGINT)
        _, stderr = process.communicate(timeout=60)
    finally:
        server.close()
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr and "run the same command again to resume" in stderr
    assert "Traceback" not in stderr
