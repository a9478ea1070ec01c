"""Metadata-only release -> `mipkit hydrate` -> the full dataset again, through the real pipeline
against the 127.0.0.1 media server: same pair_ids, same splits, statuses for what is gone."""

from __future__ import annotations

import io
import json
import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
from datasets import Audio, Image, load_from_disk
from typer.testing import CliRunner

from mipkit.cli.app import app
from mipkit.config.taxonomy import load_taxonomy
from mipkit.core.errors import MipkitError
from mipkit.core.ids import pair_id_for, source_id_for
from mipkit.pipeline.status import status_report
from mipkit.release.hydrate import Release, open_release, read_local_release, release_reader
from mipkit.release.publish import export_to_folder

runner = CliRunner()
REPO_ID = "someorg/mipnet-tiny"


def _pairs(out) -> dict[str, dict]:
    dataset = load_from_disk(str(out))
    rows = {}
    for split, ds in dataset.items():
        if len(ds):
            for row in ds.cast_column("audio", Audio(decode=False)).cast_column("image", Image(decode=False)):
                rows[row["pair_id"]] = {**row, "split": split}
    return rows


@pytest.fixture(scope="module")
def release_with_a_vanished_source(built_dataset, media_server, tmp_path_factory):
    """The metadata-only release of the shared build, plus one pair whose source has since vanished
    (its URL now answers 404), as happens to releases that outlive their sources."""
    out, _ = built_dataset
    folder = tmp_path_factory.mktemp("hydrate") / "release"
    export_to_folder(out, folder, REPO_ID, metadata_only=True)
    train = folder / "data" / "train-00000-of-00001.parquet"
    table = pq.read_table(train)
    url = media_server.url("vanished.mp4")
    source_id = source_id_for(url)
    gone = {
        **table.slice(0, 1).to_pylist()[0],
        "source_url": url,
        "source_id": source_id,
        "start_s": 4.0,
        "end_s": 14.0,
        "pair_id": pair_id_for(source_id, 4.0),
        "title": "a video since deleted",
    }
    pq.write_table(
        pa.concat_tables([table, pa.Table.from_pylist([gone], schema=table.schema)]), train
    )  # keeps the features metadata
    return folder, gone["pair_id"]


@pytest.fixture(scope="module")
def hydrated(release_with_a_vanished_source, tmp_path_factory):
    folder, _ = release_with_a_vanished_source
    out = tmp_path_factory.mktemp("hydrated") / "ds"
    result = runner.invoke(app, ["hydrate", str(folder), "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out, result.output


def test_hydrate_rebuilds_every_pair_with_the_same_ids_splits_and_labels(built_dataset, hydrated):
    original, rebuilt = _pairs(built_dataset[0]), _pairs(hydrated[0])
    assert set(rebuilt) == set(original)
    for pair_id, row in rebuilt.items():
        before = original[pair_id]
        assert source_id_for(row["source_url"]) == row["source_id"]  # the same URL hashes to the same id
        assert pair_id == pair_id_for(row["source_id"], row["start_s"])
        for column in (
            "split",
            "emotion",
            "emotion_source",
            "source_url",
            "start_s",
            "end_s",
            "title",
            "license",
            "uploader",
        ):
            assert row[column] == before[column], (pair_id, column)
        new, _ = sf.read(io.BytesIO(row["audio"]["bytes"]), dtype="float32")
        old, _ = sf.read(io.BytesIO(before["audio"]["bytes"]), dtype="float32")
        assert len(new) == len(old) == 320000 and np.corrcoef(new, old)[0, 1] > 0.99, pair_id
        assert row["image"]["bytes"][:2] == b"\xff\xd8"  # a JPEG keyframe again


def test_what_is_gone_gets_its_status_and_the_build_says_where_it_came_from(release_with_a_vanished_source, hydrated):
    folder, gone_pair = release_with_a_vanished_source
    out, output = hydrated
    report = status_report(out)
    failed = {f.get("pair_id"): f for f in report["failed"]}
    assert failed[gone_pair]["status"] == "unavailable" and "404" in failed[gone_pair]["error"]
    assert report["counts"] == {"ok": len(_pairs(out)), "unavailable": 1}
    build = json.loads((out / "build" / "build.json").read_text())
    assert build["kind"] == "hydrate"
    assert build["inputs"] == sorted(p.name for p in (folder / "data").glob("*.parquet"))
    for line in ("in the release", "rebuilt", "missing (see mipkit status)", "rebuilt into another split"):
        assert line in output
    assert re.search(r"missing \(see mipkit status\)\s*│\s*1\s*│", output)
    assert re.search(r"rebuilt into another split\s*│\s*0\s*│", output)


def test_a_second_hydrate_resumes_and_adds_nothing(release_with_a_vanished_source, hydrated):
    folder, _ = release_with_a_vanished_source
    out, _ = hydrated
    before = _pairs(out)
    committed = {p: p.stat().st_mtime_ns for p in (out / "build" / "shards").glob("*/stats.json")}
    result = runner.invoke(app, ["hydrate", str(folder), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert committed and {p: p.stat().st_mtime_ns for p in committed} == committed  # no shard was built again
    assert set(_pairs(out)) == set(before)


def _rows(**changes) -> list[dict]:
    url = "http://127.0.0.1:1/clip.mp4"
    source_id = source_id_for(url)
    base = {
        "pair_id": pair_id_for(source_id, 5.0),
        "source_id": source_id,
        "source_url": url,
        "start_s": 5.0,
        "end_s": 15.0,
        "emotion": 2,
        "title": "t",
        "license": "CC0-1.0",
        "split": "train",
    }
    return [{**base, **changes}]


def test_release_rows_become_windows_and_bad_rows_become_statuses():
    taxonomy = load_taxonomy("audioset_moods")
    names = taxonomy.names
    good = _rows()
    rows = (
        good
        + good
        + _rows(source_id="../../etc", pair_id=None)
        + _rows(pair_id="tampered_00005000")
        + _rows(start_s="soon", pair_id=None)
        + _rows(emotion=None, start_s=9.5, pair_id=pair_id_for(good[0]["source_id"], 9.5))
    )
    sources, problems = release_reader(Release("r", rows, names, []))(taxonomy)
    assert (
        len(sources) == 1 and sources[0].url == good[0]["source_url"] and sources[0].source_id == good[0]["source_id"]
    )
    windows = sources[0].windows
    assert [(w.start_s, w.emotion, w.title, w.license) for w in windows] == [
        (5.0, "sad", "t", "CC0-1.0"),
        (9.5, None, "t", "CC0-1.0"),
    ]
    expected = [
        ("duplicate", f"row 2: pair {good[0]['pair_id']} appears twice"),
        ("bad_row", "row 3: source_id '../../etc' is not a safe id"),
        ("bad_row", "row 4: pair_id 'tampered_00005000' does not match"),
        ("bad_row", "row 5: start_s 'soon' is not a number"),
    ]
    assert len(problems) == len(expected)
    for (status, reason), problem in zip(expected, sorted(problems, key=lambda p: p.row)):
        assert problem.status == status and problem.error.startswith(reason), problem
    with pytest.raises(MipkitError, match=r"labels \['jolly'\] are not in taxonomy 'audioset_moods'; pass --recipe"):
        release_reader(Release("r", good, ["jolly"], []))(taxonomy)


def test_hydrate_errors_name_the_input_and_what_to_do(tmp_path, monkeypatch):
    with pytest.raises(MipkitError, match="nowhere' does not exist; pass a release folder"):
        open_release(str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(MipkitError, match="holds no Parquet files"):
        read_local_release(tmp_path / "empty")
    pq.write_table(pa.table({"url": ["x"]}), tmp_path / "wrong.parquet")
    with pytest.raises(MipkitError, match="wrong.parquet has no source_url, start_s column"):
        read_local_release(tmp_path / "wrong.parquet")
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(MipkitError, match="cannot load release 'someorg/not-cached' from the Hugging Face Hub"):
        open_release("someorg/not-cached")


def test_hydrate_keeps_the_release_split_and_label_provenance(built_dataset, tmp_path):
    """A release's split and model-label provenance win over what a fresh build would assign."""
    out, _ = built_dataset
    folder = tmp_path / "release"
    export_to_folder(out, folder, REPO_ID, metadata_only=True)
    train = folder / "data" / "train-00000-of-00001.parquet"
    table = pq.read_table(train)
    rows = table.to_pylist()
    moved = rows[0]["source_id"]
    rows = [{**r, "split": "test"} if r["source_id"] == moved else r for r in rows]
    rows[0] = {**rows[0], "emotion_source": "passt:0123456789ab", "emotion_score": 0.875}
    pq.write_table(pa.Table.from_pylist(rows, schema=table.schema), train)
    rebuilt_dir = tmp_path / "ds"
    result = runner.invoke(app, ["hydrate", str(folder), "--out", str(rebuilt_dir)])
    assert result.exit_code == 0, result.output
    rebuilt = _pairs(rebuilt_dir)
    assert {r["split"] for r in rebuilt.values() if r["source_id"] == moved} == {"test"}
    first = rebuilt[rows[0]["pair_id"]]
    assert first["emotion_source"] == "passt:0123456789ab" and first["emotion_score"] == pytest.approx(0.875)
    untouched = [r for r in rebuilt.values() if r["pair_id"] != rows[0]["pair_id"]]
    assert all(r["emotion_source"] == "manifest" and r["emotion_score"] is None for r in untouched)
