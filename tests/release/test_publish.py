"""Publishing: the Hub layout written with --to-folder and read back by `datasets.load_dataset`, the
card's YAML and figures, metadata-only releases, privacy, and the Hub call up to the network boundary."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from datasets import Audio, ClassLabel, Image, load_dataset, load_from_disk
from typer.testing import CliRunner

from mipkit.cli.app import app
from mipkit.core.errors import MipkitError
from mipkit.core.ownership import MARKER
from mipkit.pipeline.status import status_report
from mipkit.release.hydrate import METADATA_COLUMNS, private_strings, redact_url, scrub
from mipkit.release.publish import TASK_CATEGORIES, export_to_folder, hub_license, size_category

REPO_ROOT = Path(__file__).resolve().parents[2]
REPO_ID = "someorg/mipnet-tiny"
runner = CliRunner()


def _files(folder: Path) -> set[str]:
    """The release's files (without mipkit's owner marker, which says the folder may be replaced)."""
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file() and p.name != MARKER}


def _card(folder: Path) -> tuple[dict, str]:
    text = (folder / "README.md").read_text(encoding="utf-8")
    header, body = re.match(r"^---\n(.*?)\n---\n(.*)$", text, re.S).groups()
    return yaml.safe_load(header), body


def _raw(dataset):
    return dataset.cast_column("audio", Audio(decode=False)).cast_column("image", Image(decode=False))


@pytest.fixture(scope="module")
def full_release(built_dataset, tmp_path_factory):
    out, _ = built_dataset
    folder = tmp_path_factory.mktemp("release") / "full"
    result = runner.invoke(app, ["push-to-hub", str(out), REPO_ID, "--to-folder", str(folder)])
    assert result.exit_code == 0, result.output
    return folder, result.output


@pytest.fixture(scope="module")
def built(built_dataset):
    out, _ = built_dataset
    return {split: ds for split, ds in load_from_disk(str(out)).items() if len(ds)}


def test_to_folder_writes_the_hub_layout_that_load_dataset_reads_back(full_release, built, tmp_path):
    folder, output = full_release
    assert _files(folder) == {"README.md", "label_distribution.png"} | {
        f"data/{s}-00000-of-00001.parquet" for s in built
    }
    for split in built:
        assert f"data/{split}-00000-of-00001.parquet" in output  # the table of what was written
    loaded = load_dataset(str(folder), cache_dir=str(tmp_path / "cache"))
    assert set(loaded) == set(built)
    features = loaded["train"].features
    assert isinstance(features["image"], Image)
    assert isinstance(features["audio"], Audio) and features["audio"].sampling_rate == 32000
    assert (
        isinstance(features["emotion"], ClassLabel)
        and features["emotion"].names == built["train"].features["emotion"].names
    )
    for split, ds in built.items():
        published, original = _raw(loaded[split]), _raw(ds)
        assert list(published["pair_id"]) == list(original["pair_id"])
        assert list(published["emotion"]) == list(original["emotion"])
        assert [a["bytes"] for a in published["audio"]] == [a["bytes"] for a in original["audio"]]
        assert all(not os.path.isabs(m["path"]) for m in list(published["audio"]) + list(published["image"]))
    image = loaded["train"].select_columns(["image"])[0][
        "image"
    ]  # decoding audio too would import torch: slow, tested elsewhere
    assert image.size[0] > 0 and image.mode == "RGB"


def test_card_yaml_carries_hub_metadata_features_and_configs(full_release, built):
    folder, _ = full_release
    meta, _ = _card(folder)
    total = sum(len(ds) for ds in built.values())
    assert meta["license"] == "cc0-1.0"  # every built pair is CC0-1.0 in the standard manifest
    assert meta["task_categories"] == TASK_CATEGORIES
    assert {"music", "image-music-retrieval", "cross-modal-retrieval"} <= set(meta["tags"])
    assert meta["size_categories"] == [size_category(total)] == ["n<1K"]
    assert meta["pretty_name"] == "MIPNet-style image–music pairs"
    assert meta["source_datasets"] == ["original"]
    assert meta["annotations_creators"] == ["expert-generated"]
    assert meta["configs"] == [
        {"config_name": "default", "data_files": [{"split": s, "path": f"data/{s}-*"} for s in built]}
    ]
    info = meta["dataset_info"]
    features = {f["name"]: f for f in info["features"]}
    assert list(features) == list(built["train"].features)
    assert features["image"]["dtype"] == "image" and features["audio"]["dtype"] == {"audio": {"sampling_rate": 32000}}
    assert (
        list(features["emotion"]["dtype"]["class_label"]["names"].values()) == built["train"].features["emotion"].names
    )
    assert {s["name"]: s["num_examples"] for s in info["splits"]} == {s: len(ds) for s, ds in built.items()}
    assert info["download_size"] == sum(p.stat().st_size for p in (folder / "data").iterdir())


def test_card_prose_reports_this_builds_figures(full_release, built, built_dataset):
    folder, _ = full_release
    out, _ = built_dataset
    _, body = _card(folder)
    report = status_report(out)
    requested, ok = sum(report["counts"].values()), report["counts"]["ok"]
    assert f"{requested} samples were requested, {ok} were built." in body
    for status, count in report["counts"].items():
        assert f"| {status} | {count} |" in body
    for status in ("unavailable", "decode_error", "too_short", "bad_row"):
        assert re.search(rf"^\| {status} \| .+ \| \d+ \|$", body, re.M), status  # failures by reason
    for split, ds in built.items():
        sources = len(set(ds["source_id"]))
        assert f"| {split} | {len(ds)} | {sources} |" in body
    names = built["train"].features["emotion"].names
    for label in {names[i] for ds in built.values() for i in ds["emotion"]}:
        counts = [sum(1 for i in built[s]["emotion"] if names[i] == label) for s in built]
        assert f"| {label} | " + " | ".join(map(str, counts)) + f" | {sum(counts)} |" in body
    all_sources = {sid for ds in built.values() for sid in ds["source_id"]}
    assert f"| CC0-1.0 | {len(all_sources)} | {sum(len(ds) for ds in built.values())} |" in body
    assert "![pairs per emotion and split](label_distribution.png)" in body
    assert (folder / "label_distribution.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "32000 Hz" in body and "seed 0" in body and "10-s sections" in body and "audioset_moods" in body
    assert (
        "Hybrid-Granularity Image-Music Retrieval" in body and "Inter-Intra Modal Loss" in body and "2407.19415" in body
    )
    assert "## Intended use" in body and "## Limits and biases" in body
    assert f'load_dataset("{REPO_ID}")' in body


def test_max_shard_size_numbers_the_shards_as_push_to_hub_does(built_dataset, built, tmp_path):
    out, _ = built_dataset
    written = export_to_folder(out, tmp_path / "sharded", REPO_ID, max_shard_size="150KB")
    train = sorted(w.path for w in written if w.path.startswith("data/train-"))
    count = len(train)
    assert count > 1 and train == [f"data/train-{i:05d}-of-{count:05d}.parquet" for i in range(count)]
    loaded = load_dataset(str(tmp_path / "sharded"), cache_dir=str(tmp_path / "cache"))
    assert sorted(loaded["train"]["pair_id"]) == sorted(built["train"]["pair_id"])
    with pytest.raises(MipkitError, match="--max-shard-size 'lots' is not a size"):
        export_to_folder(out, tmp_path / "bad", REPO_ID, max_shard_size="lots")


def test_metadata_only_release_has_no_media_and_keeps_the_labels(built_dataset, built, tmp_path):
    out, _ = built_dataset
    folder = tmp_path / "meta"
    export_to_folder(out, folder, REPO_ID, metadata_only=True)
    for file in (folder / "data").iterdir():
        assert pq.read_schema(file).names == list(METADATA_COLUMNS)
    loaded = load_dataset(str(folder), cache_dir=str(tmp_path / "cache"))
    assert list(loaded["train"].features) == list(METADATA_COLUMNS)
    assert loaded["train"].features["emotion"] == built["train"].features["emotion"]
    for split, ds in built.items():
        assert list(loaded[split]["pair_id"]) == list(ds["pair_id"]) and list(loaded[split]["start_s"]) == list(
            ds["start_s"]
        )
    meta, body = _card(folder)
    assert "metadata-only" in meta["tags"] and meta["pretty_name"].endswith("(metadata only)")
    assert [f["name"] for f in meta["dataset_info"]["features"]] == list(METADATA_COLUMNS)
    assert f"mipkit hydrate {REPO_ID} --out" in body


def test_an_existing_folder_that_is_not_a_release_is_left_alone(built_dataset, tmp_path):
    out, _ = built_dataset
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(MipkitError, match="holds files mipkit did not write"):
        export_to_folder(out, tmp_path / "mine", REPO_ID)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(MipkitError, match="is not a finished mipkit build"):
        export_to_folder(tmp_path, tmp_path / "x", REPO_ID)


# --------------------------------------------------------------------------- privacy


def _string_values(table: pa.Table):
    for column in table.flatten().columns:
        if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
            yield from (v for v in column.to_pylist() if v)


def test_nothing_private_leaks_into_the_card_the_data_or_the_output(built_dataset, tmp_path, monkeypatch):
    out, _ = built_dataset
    private = tmp_path / "alice-private"
    # A build whose source URLs carry credentials (as a manifest may hold them) ...
    with_credentials = load_from_disk(str(out)).map(
        lambda urls: {"source_url": [u.replace("http://", "http://user:secret-pass@") for u in urls]},
        input_columns="source_url",
        batched=True,
    )
    with_credentials.save_to_disk(str(private / "ds"))
    shutil.copytree(out / "build", private / "ds" / "build")
    cookies = private / "alice-cookies-youtube.txt"
    cookies.write_text("# Netscape HTTP Cookie File\n")
    # ... and a build.json with the cookies file and proxy in clear (mipkit redacts both; a hand-made one may not).
    record = private / "ds" / "build" / "build.json"
    build = json.loads(record.read_text())
    build["recipe"]["ytdlp"].update(cookiefile=str(cookies), proxy="http://user:secret-pass@127.0.0.1:9")
    record.write_text(json.dumps(build))
    token = "hf_NotARealTokenButSecret1234"
    monkeypatch.setenv("HF_TOKEN", token)

    result = runner.invoke(app, ["push-to-hub", str(private / "ds"), REPO_ID, "--to-folder", str(tmp_path / "rel")])
    assert result.exit_code == 0, result.output
    secrets = ["secret-pass", "user:secret", cookies.name, token]
    local_paths = [str(tmp_path), str(private.resolve()), "alice-private"]
    card = (tmp_path / "rel" / "README.md").read_text()
    assert "cookies: used, not published" in card and "proxy: used, not published" in card
    assert "credentials removed from source URLs" in result.output
    published = load_dataset(str(tmp_path / "rel"), cache_dir=str(tmp_path / "cache"))["train"]
    assert all(url.startswith("http://127.0.0.1:") for url in published["source_url"])
    for secret in secrets:  # the console may echo the paths the user typed, never a secret
        assert secret not in result.output, secret
    texts = {"card": card}
    for file in (tmp_path / "rel" / "data").iterdir():
        metadata = pq.read_schema(file).metadata or {}
        texts[f"{file.name} metadata"] = " ".join(k.decode() + v.decode() for k, v in metadata.items())
        texts[f"{file.name} strings"] = " ".join(_string_values(pq.read_table(file)))
    for where, text in texts.items():
        for secret in secrets + local_paths:
            assert secret not in text, (where, secret)


def test_the_rendering_scrubs_what_build_json_and_the_machine_know(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_AnotherFakeToken9876")
    build = {
        "recipe": {
            "ytdlp": {"cookiefile": "/home/alice/cookies-yt.txt", "proxy": "socks5://bob:hunter22@10.0.0.1:1080"}
        }
    }
    secrets = private_strings(tmp_path / "build-dir", build)
    text = scrub(
        f"at {tmp_path}/build-dir, cookies-yt.txt, hunter22, hf_AnotherFakeToken9876 http://carol:pw@host/x", secrets
    )
    for leaked in (str(tmp_path), "cookies-yt.txt", "hunter22", "bob", "hf_AnotherFakeToken9876", "carol:pw"):
        assert leaked not in text
    assert redact_url("https://dave:pw@media.example/a.mp4?x=1") == "https://media.example/a.mp4?x=1"
    assert redact_url("https://www.youtube.com/watch?v=abc") == "https://www.youtube.com/watch?v=abc"


def test_card_metadata_helpers():
    from collections import Counter

    assert [size_category(n) for n in (0, 999, 1000, 66048, 2_000_000)] == [
        "n<1K",
        "n<1K",
        "1K<n<10K",
        "10K<n<100K",
        "1M<n<10M",
    ]
    assert hub_license(Counter({"CC0-1.0": 3}), "other") == "cc0-1.0"
    assert hub_license(Counter({"Creative Commons Attribution license (reuse allowed)": 2}), "other") == "cc-by-3.0"
    assert hub_license(Counter({"CC0-1.0": 3, "CC-BY-4.0": 1}), "other") == "other"
    assert hub_license(Counter({"not stated by the source": 3}), "other") == "other"


# --------------------------------------------------------------------------- the Hub


class FakeHub(ThreadingHTTPServer):
    """Answers like the Hub until ``preupload``, which it refuses; records what the client sent
    (whether the bearer token matched, never the token itself)."""

    def __init__(self, token: str):
        self.token, self.requests = token, []
        super().__init__(("127.0.0.1", 0), FakeHubHandler)
        self.url = f"http://127.0.0.1:{self.server_address[1]}"


class FakeHubHandler(BaseHTTPRequestHandler):
    server: FakeHub

    def log_message(self, *args):
        return

    def _reply(self, code: int, body) -> None:
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _serve(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        auth = self.headers.get("Authorization")
        self.server.requests.append(
            {
                "method": self.command,
                "path": self.path.split("?")[0],
                "auth": None if auth is None else auth == f"Bearer {self.server.token}",
                "json": json.loads(raw) if raw.startswith(b"{") else None,
            }
        )
        path = self.path.split("?")[0]
        if path == "/api/whoami-v2":
            return self._reply(200, {"name": "tester", "type": "user"})
        if path == "/api/repos/create":
            return self._reply(200, {"url": f"{self.server.url}/datasets/{REPO_ID}"})
        if path.endswith("/settings") or "/branch/" in path:
            return self._reply(200, {})
        if "/tree/" in path:
            return self._reply(200, [])
        if path == "/api/validate-yaml":
            return self._reply(200, {"errors": [], "warnings": []})
        return self._reply(403, {"error": f"You don't have the rights to write to {REPO_ID}"})

    do_GET = do_POST = do_PUT = do_HEAD = _serve


def test_push_sends_what_the_hub_expects_up_to_the_network_boundary(built_dataset, built, monkeypatch):
    import huggingface_hub.constants

    out, _ = built_dataset
    token = "hf_FakeTokenForTheRecordingServer42"
    hub = FakeHub(token)
    threading.Thread(target=hub.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("HF_ENDPOINT", hub.url)
        monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", hub.url)
        monkeypatch.setenv("HF_TOKEN", token)
        result = runner.invoke(
            app, ["push-to-hub", str(out), REPO_ID, "--private", "--revision", "dev", "--metadata-only"]
        )
    finally:
        hub.shutdown()
        hub.server_close()
    assert isinstance(result.exception, MipkitError), result.output
    message = str(result.exception)
    assert "HTTP 403" in message and REPO_ID in message and "\n" not in message
    assert token not in message and token not in result.output
    hub_calls = [r for r in hub.requests if r["path"] != "/api/agent-harnesses"]  # huggingface_hub's own telemetry
    assert all(r["auth"] is True for r in hub_calls)  # the bearer token went with every Hub call, and only there
    paths = [(r["method"], r["path"]) for r in hub_calls]
    assert paths[:4] == [
        ("GET", "/api/whoami-v2"),
        ("POST", "/api/repos/create"),
        ("PUT", f"/api/datasets/{REPO_ID}/settings"),
        ("POST", f"/api/datasets/{REPO_ID}/branch/dev"),
    ]
    create = hub_calls[1]["json"]
    assert create["name"] == "mipnet-tiny" and create["organization"] == "someorg" and create["type"] == "dataset"
    assert create.get("visibility") == "private" or create.get("private") is True
    preupload = next(r for r in hub_calls if r["path"] == f"/api/datasets/{REPO_ID}/preupload/dev")
    assert {f["path"] for f in preupload["json"]["files"]} == {"README.md", "label_distribution.png"} | {
        f"data/{s}-00000-of-00001.parquet" for s in built
    }


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _push_cli(out: Path, env: dict) -> subprocess.CompletedProcess:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("HF_")}
    return subprocess.run(
        [sys.executable, "-m", "mipkit", "push-to-hub", str(out), REPO_ID],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
        env={**clean, **env},
    )


def test_push_to_an_unreachable_hub_is_one_clear_line_from_the_real_cli(built_dataset, tmp_path):
    out, _ = built_dataset
    token = "hf_FakeTokenThatMustNotBePrinted7"
    port = _closed_port()
    run = _push_cli(
        out, {"HF_HOME": str(tmp_path / "hf-home"), "HF_ENDPOINT": f"http://127.0.0.1:{port}", "HF_TOKEN": token}
    )
    assert run.returncode == 2, run.stderr
    errors = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"cannot reach the Hugging Face Hub at http://127.0.0.1:{port}" in errors[0], run.stderr
    assert "--to-folder" in errors[0] and "Traceback" not in run.stderr and token not in run.stderr + run.stdout


@pytest.mark.parametrize("case", ["offline", "not_logged_in"])
def test_push_offline_or_not_logged_in_fails_before_any_request(built_dataset, monkeypatch, case):
    import huggingface_hub

    out, _ = built_dataset
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{_closed_port()}")
    if case == "offline":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.setenv("HF_TOKEN", "hf_FakeTokenThatMustNotBePrinted7")
        expected = "HF_HUB_OFFLINE is set, so nothing can be pushed"
    else:
        monkeypatch.delenv("HF_TOKEN", raising=False)
        monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)  # as on a machine never logged in
        expected = "not logged in to the Hugging Face Hub; run `hf auth login` or set HF_TOKEN"
    result = runner.invoke(app, ["push-to-hub", str(out), REPO_ID])
    assert isinstance(result.exception, MipkitError), result.output
    assert expected in str(result.exception) and "--to-folder" in str(result.exception)
    assert "hf_FakeToken" not in str(result.exception) + result.output


def test_card_for_an_audio_only_audioset_build_renders_its_own_prose(built_dataset):
    from mipkit.release.hydrate import load_build, release_splits
    from mipkit.release.publish import card_data_yaml, card_figures, render_card

    out, _ = built_dataset
    dataset, build = load_build(out)
    build = {
        **build,
        "kind": "audioset-mood",
        "recipe": {**build["recipe"], "clip": {**build["recipe"]["clip"], "image": False}},
    }
    splits = release_splits(dataset, metadata_only=True)
    # As in a real audioset-mood build: the labels come from AudioSet's segment lists.
    splits = {name: ds.map(lambda row: {"emotion_source": "audioset"}) for name, ds in splits.items()}
    figures = card_figures(out, build, splits, metadata_only=True, repo_id=REPO_ID)
    text = render_card(figures, card_data_yaml(figures, splits, {}), secrets=[])
    meta = yaml.safe_load(text.split("---\n")[1])
    assert meta["source_datasets"] == ["extended|audioset"] and meta["annotations_creators"] == ["found"]
    assert "image-classification" not in meta["task_categories"]
    assert "music clips of 10 seconds" in text and "AudioSet segments carrying exactly one" in text
    assert "| `image` |" not in text and "**Image.**" not in text


def test_annotation_creators_follow_where_each_label_came_from():
    from collections import Counter

    from mipkit.release.publish import annotations_creators

    assert annotations_creators(Counter({"audioset": 10}), "audioset-mood") == ["found"]
    assert annotations_creators(Counter({"manifest": 3}), "mipnet") == ["expert-generated"]
    assert annotations_creators(Counter({"manifest": 3, "passt:0123abcd": 2, None: 1}), "mipnet") == [
        "expert-generated",
        "machine-generated",
    ]
    assert annotations_creators(Counter({None: 4}), "mipnet") == ["no-annotation"]
