"""A rerun of a finished build leaves the assembled dataset alone; every change that alters it re-assembles."""

from __future__ import annotations

import json
import shutil

from conftest import small_recipe, write_manifest
from datasets import load_from_disk

from mipkit.kinds.pairs import BuildOptions, build
from mipkit.pipeline.assemble import write_model_labels

UP_TO_DATE = "dataset up to date"


def _dataset_files(out) -> dict[str, tuple[int, int]]:
    """Every file of the assembled dataset, with its inode and modification time."""
    files = [
        out / "dataset_dict.json",
        *(p for split in ("train", "validation", "test") for p in (out / split).rglob("*")),
    ]
    return {str(p.relative_to(out)): (p.stat().st_ino, p.stat().st_mtime_ns) for p in files if p.is_file()}


def _setup(tmp_path, media_server, **recipe):
    rows = [
        {"url": media_server.url("src0.mp4"), "start_s": 3.0, "emotion": "happy"},
        {"url": media_server.url("src1.mp4"), "start_s": 1.0, "emotion": ""},  # unlabelled: a relabel may label it
    ]
    manifest = write_manifest(tmp_path / "m.csv", rows)
    recipe = small_recipe(**{"shards.sources_per_shard": 1, **recipe})
    out = tmp_path / "ds"
    build(BuildOptions(manifest=manifest, out=out, recipe=recipe))
    return manifest, recipe, out


def _rows(out) -> dict[str, tuple[str, object]]:
    dataset = load_from_disk(str(out))
    names = dataset["train"].features["emotion"].names
    return {
        row["source_id"]: (split, None if row["emotion"] is None else names[row["emotion"]])
        for split in dataset
        for row in dataset[split].select_columns(["source_id", "emotion"])
    }


def test_rerun_of_a_finished_build_touches_no_dataset_file(tmp_path, media_server, capsys):
    manifest, recipe, out = _setup(tmp_path, media_server)
    before, rows = _dataset_files(out), _rows(out)
    first = capsys.readouterr().err
    assert UP_TO_DATE not in first
    summary = build(BuildOptions(manifest=manifest, out=out, recipe=recipe))
    assert UP_TO_DATE in capsys.readouterr().err
    assert _dataset_files(out) == before
    assert summary["counts"] == {"ok": 2} and sum(summary["splits"].values()) == 2 and "emotion" in summary
    assert _rows(out) == rows


def _reassembled(out, before, capsys) -> None:
    assert UP_TO_DATE not in capsys.readouterr().err
    after = _dataset_files(out)
    assert after.keys() == before.keys() and all(after[name] != before[name] for name in before)


def test_a_redone_shard_reassembles(tmp_path, media_server, capsys):
    manifest, recipe, out = _setup(tmp_path, media_server)
    before = _dataset_files(out)
    (out / "build" / "shards" / "00001" / "stats.json").unlink()  # a shard killed before its commit
    capsys.readouterr()
    build(BuildOptions(manifest=manifest, out=out, recipe=recipe))
    _reassembled(out, before, capsys)


def test_retry_failed_reopening_a_shard_reassembles(tmp_path, media_server, capsys):
    manifest, recipe, out = _setup(tmp_path, media_server)
    before = _dataset_files(out)
    status = out / "build" / "shards" / "00000" / "status.jsonl"
    status.write_text(json.dumps({**json.loads(status.read_text()), "status": "rate_limited"}) + "\n")
    capsys.readouterr()
    build(BuildOptions(manifest=manifest, out=out, recipe=recipe, retry_failed=True))
    _reassembled(out, before, capsys)


def test_a_relabel_reassembles_with_the_new_labels(tmp_path, media_server, capsys):
    manifest, recipe, out = _setup(tmp_path, media_server)
    before = _dataset_files(out)
    unlabelled = [sid for sid, (_, emotion) in _rows(out).items() if emotion is None]
    assert len(unlabelled) == 1
    pair_id = next(
        row["pair_id"] for split in load_from_disk(str(out)).values() for row in split if row["source_id"] in unlabelled
    )
    labels = [{"pair_id": pair_id, "emotion": "sad", "emotion_score": 0.9, "emotion_source": "passt", "dropped": False}]
    write_model_labels(out / "build", labels)
    capsys.readouterr()
    build(BuildOptions(manifest=manifest, out=out, recipe=recipe))
    _reassembled(out, before, capsys)
    assert _rows(out)[unlabelled[0]][1] == "sad"


def test_a_deleted_split_folder_is_assembled_again(tmp_path, media_server, capsys):
    manifest, recipe, out = _setup(tmp_path, media_server)
    before = _dataset_files(out)
    rows = _rows(out)
    split = next(split for split, _ in rows.values())
    shutil.rmtree(out / split)
    capsys.readouterr()
    build(BuildOptions(manifest=manifest, out=out, recipe=recipe))
    _reassembled(out, before, capsys)
    assert _rows(out) == rows


def test_a_changed_recipe_reassembles(tmp_path, media_server, capsys):
    manifest, _, out = _setup(tmp_path, media_server)
    capsys.readouterr()
    changed = small_recipe(
        **{"shards.sources_per_shard": 1, "splits.train": 0.0, "splits.validation": 0.0, "splits.test": 1.0}
    )
    build(BuildOptions(manifest=manifest, out=out, recipe=changed))
    assert UP_TO_DATE not in capsys.readouterr().err
    assert {split for split, _ in _rows(out).values()} == {"test"}
    build(BuildOptions(manifest=manifest, out=out, recipe=changed))  # and then it is up to date again
    assert UP_TO_DATE in capsys.readouterr().err
