"""End-to-end: the real yt-dlp download path against 127.0.0.1, ffmpeg decoding, HF datasets output."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pytest
import soundfile as sf
from conftest import GOOD_WINDOWS, SOURCE_SECONDS
from datasets import Audio, load_from_disk
from datasets import Image as DsImage
from PIL import Image
from typer.testing import CliRunner

from mipkit.cli.app import app
from mipkit.demo.synthetic_media import spec_for_index

runner = CliRunner()


def _rows(out):
    dataset = (
        load_from_disk(str(out)).cast_column("audio", Audio(decode=False)).cast_column("image", DsImage(decode=False))
    )
    return dataset, [row for split in dataset.values() for row in split]


def _source_index(row) -> int:
    return int(re.match(r"src(\d+)-", row["source_id"]).group(1))


def test_every_good_window_becomes_a_pair_with_stable_ids(built_dataset):
    out, summary = built_dataset
    _, rows = _rows(out)
    assert summary["counts"]["ok"] == len(GOOD_WINDOWS) == len(rows)
    ids = [r["pair_id"] for r in rows]
    assert len(set(ids)) == len(ids)
    for row in rows:
        assert row["pair_id"] == f"{row['source_id']}_{int(round(row['start_s'] * 1000)):08d}"
        assert row["end_s"] == pytest.approx(row["start_s"] + 10.0)


def test_clip_audio_is_the_source_at_start_s(built_dataset):
    out, _ = built_dataset
    _, rows = _rows(out)
    for row in rows:
        pcm, rate = sf.read(io.BytesIO(row["audio"]["bytes"]), dtype="float32")
        assert rate == 32000 and pcm.ndim == 1 and len(pcm) == 320000
        spec = spec_for_index(_source_index(row), SOURCE_SECONDS)
        aligned = np.corrcoef(pcm, spec.expected_audio(row["start_s"], 10.0, 32000))[0, 1]
        shifted = np.corrcoef(pcm, spec.expected_audio(row["start_s"] + 0.25, 10.0, 32000))[0, 1]
        assert aligned > 0.95, (row["pair_id"], aligned)
        assert abs(shifted) < 0.3, (row["pair_id"], shifted)


def test_image_is_the_frame_at_the_window_middle(built_dataset):
    out, _ = built_dataset
    _, rows = _rows(out)
    for row in rows:
        image = Image.open(io.BytesIO(row["image"]["bytes"])).convert("L")
        spec = spec_for_index(_source_index(row), SOURCE_SECONDS)
        gray = float(np.asarray(image).mean())
        # Grey rises 4.7 levels per second: +-2 levels pins the frame within 0.45 s; 1 s off fails.
        assert gray == pytest.approx(spec.expected_gray(row["start_s"] + 5.0), abs=2.0), row["pair_id"]
        assert abs(gray - spec.expected_gray(row["start_s"] + 4.0)) > 2.0


def test_labels_follow_the_manifest_and_the_taxonomy(built_dataset):
    out, _ = built_dataset
    dataset, rows = _rows(out)
    names = dataset["train"].features["emotion"].names
    assert names == ["happy", "funny", "sad", "tender", "exciting", "angry", "scary"]
    wanted = {(i, round(s, 3)): e.lower().replace(" music", "") for i, s, e in GOOD_WINDOWS}
    for row in rows:
        assert names[row["emotion"]] == wanted[(_source_index(row), round(row["start_s"], 3))]
        assert row["emotion_source"] == "manifest" and row["emotion_score"] is None
        assert row["title"].startswith("source ") and row["license"] == "CC0-1.0"


def test_splits_are_by_source(built_dataset):
    out, summary = built_dataset
    dataset, _ = _rows(out)
    seen = {}
    for split, ds in dataset.items():
        for sid, column_split in zip(ds["source_id"], ds["split"]):
            assert column_split == split
            assert seen.setdefault(sid, split) == split, f"{sid} in two splits"
    assert set(dataset) == {"train", "validation", "test"}
    assert summary["splits"] == {k: len(v) for k, v in dataset.items()}


def test_failures_are_recorded_with_their_kind(built_dataset):
    out, _ = built_dataset
    result = runner.invoke(app, ["status", str(out), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["counts"] == {
        "bad_row": 2,
        "decode_error": 1,
        "ok": len(GOOD_WINDOWS),
        "too_short": 2,
        "unavailable": 1,
    }
    by_url = {}
    for entry in report["failed"]:
        by_url.setdefault((entry["url"] or "").rsplit("/", 1)[-1], []).append(entry)
    assert by_url["gone.mp4"][0]["status"] == "unavailable" and "404" in by_url["gone.mp4"][0]["error"]
    assert by_url["corrupt.mp4"][0]["status"] == "decode_error"
    assert by_url["short.mp4"][0]["status"] == "too_short"
    assert {e["status"] for e in by_url["src2.mp4"]} == {"bad_row"}
    assert any("allowed: happy" in e["error"] for e in by_url["src2.mp4"])
    past_end = by_url["src3.mp4"][0]
    assert past_end["status"] == "too_short" and past_end["pair_id"].endswith("_00025000")
    for entry in report["failed"]:
        assert "\n" not in entry["error"] and entry["error"]


def test_status_table_and_inspect_render(built_dataset):
    out, _ = built_dataset
    table = runner.invoke(app, ["status", str(out)])
    assert table.exit_code == 0 and "unavailable" in table.stdout and "404" in table.stdout
    shown = runner.invoke(app, ["inspect", str(out)])
    assert shown.exit_code == 0, shown.output
    assert "train" in shown.stdout and "happy" in shown.stdout and "pair_id" in shown.stdout


def test_dataset_decodes_through_datasets(built_dataset):
    out, _ = built_dataset
    dataset = load_from_disk(str(out))
    row = dataset["train"][0]
    assert isinstance(row["image"], Image.Image) and row["image"].size[0] > 0
    samples = row["audio"].get_all_samples()  # torchcodec AudioDecoder
    assert samples.sample_rate == 32000 and samples.data.shape[-1] == 320000
    assert (out / "label_distribution.png").stat().st_size > 1000


def test_second_run_adds_nothing(built_dataset, standard_manifest, media_server):
    from conftest import standard_build_options

    from mipkit.kinds.pairs import build

    out, first = built_dataset
    stamps = {p: p.stat().st_mtime_ns for p in (out / "build" / "shards").glob("*/stats.json")}
    again = build(standard_build_options(standard_manifest, media_server, out))
    assert again["counts"] == first["counts"] and again["splits"] == first["splits"]
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps, "a done shard was rebuilt"
    ids = [pid for split in load_from_disk(str(out)).values() for pid in split["pair_id"]]
    assert len(ids) == len(set(ids)) == first["counts"]["ok"]
