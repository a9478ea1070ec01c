"""The PaSST mood labeller on a tiny random PaSST, atomic relabelling, taxonomies and mapping tables."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from helpers.labelled import MOODS, flac, make_built_dataset
from typer.testing import CliRunner

from mipkit.config.mapping import load_mapping, map_labels
from mipkit.config.taxonomy import load_taxonomy
from mipkit.core.errors import MipkitError
from mipkit.core.ownership import write_marker
from mipkit.labelling.passt import decode_clip, make_labeller
from mipkit.labelling.relabel import label_dataset

runner = CliRunner()


def snapshot(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def columns(folder: Path) -> dict[str, dict[str, list]]:
    from datasets import load_from_disk

    dataset = load_from_disk(str(folder))
    return {
        split: {
            c: dataset[split].data.column(c).to_pylist()
            for c in ("pair_id", "emotion", "emotion_source", "emotion_score")
        }
        for split in dataset
    }


@pytest.fixture(scope="module")
def labeller():
    return make_labeller("passt", None, preset="tiny", allow_random_weights=True, device="cpu", batch_size=3, seed=0)


@pytest.fixture()
def built(tmp_path) -> Path:
    return make_built_dataset(tmp_path / "ds")


def test_labeller_outputs_seven_mood_probabilities_reproducibly(labeller):
    assert not any(m.training for m in labeller.encoder.modules())  # eval: no mel jitter, no patchout
    assert labeller.provenance == "passt-tiny:random-seed0"
    assert labeller.class_names == MOODS and labeller.audioset_indices == list(range(276, 283))
    audio = np.stack([decode_clip(flac(10.0, f)) for f in (200.0, 300.0)])
    probs = labeller.probabilities(audio)
    assert probs.shape == (2, 7) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    again = make_labeller("passt", None, preset="tiny", allow_random_weights=True, device="cpu", seed=0)
    assert np.allclose(again.probabilities(audio), probs, atol=1e-6)


def test_random_models_are_refused_for_real_labelling(tmp_path):
    with pytest.raises(MipkitError, match="--preset tiny is a random test model.*--allow-random-weights"):
        make_labeller("passt", None, preset="tiny")
    with pytest.raises(MipkitError, match="without --weights the model has random weights"):
        make_labeller("passt", None)
    with pytest.raises(MipkitError, match="--music-model 'clap' is unknown; choose one of passt"):
        make_labeller("clap", tmp_path / "w.pt")
    with pytest.raises(MipkitError, match="--weights file 'w.pt' not found"):
        make_labeller("passt", tmp_path / "w.pt")


def test_weights_file_gives_the_provenance_and_must_fit(labeller, tmp_path):
    import torch

    weights = tmp_path / "tiny.pt"
    torch.save(labeller.encoder.net.state_dict(), weights)
    loaded = make_labeller("passt", weights, preset="tiny", allow_random_weights=True, device="cpu")
    assert loaded.provenance == "passt-tiny:" + hashlib.sha256(weights.read_bytes()).hexdigest()[:12]
    audio = decode_clip(flac(10.0, 250.0))[None]
    assert np.allclose(loaded.probabilities(audio), labeller.probabilities(audio), atol=1e-6)
    wrong = tmp_path / "wrong.pt"
    torch.save({"head.weight": torch.zeros(3)}, wrong)
    with pytest.raises(MipkitError, match="^--weights: 'wrong.pt' does not fit"):
        make_labeller("passt", wrong, preset="tiny", allow_random_weights=True, device="cpu")


def test_label_in_place_follows_the_threshold_and_keeps_manifest_labels(labeller, built):
    before = columns(built)
    # The threshold between the clips' top probabilities: some pairs get a label, some do not.
    from datasets import Audio, load_from_disk

    dataset = load_from_disk(str(built))
    top = {}
    for split in dataset:
        entries = dataset[split].cast_column("audio", Audio(decode=False))
        for row in entries:
            top[row["pair_id"]] = labeller.probabilities(decode_clip(row["audio"]["bytes"])[None])[0]
    model_rows = [
        pid
        for split in before.values()
        for pid, src in zip(split["pair_id"], split["emotion_source"])
        if src != "manifest"
    ]
    threshold = float(np.median([top[p].max() for p in model_rows]))

    summary = label_dataset(built, labeller, threshold=threshold)
    after = columns(built)
    assert summary["counts"]["protected"] == 3 and summary["counts"]["labelled"] + summary["counts"]["unlabelled"] == 7
    assert 0 < summary["counts"]["labelled"] < 7
    for split in after:
        assert after[split]["pair_id"] == before[split]["pair_id"]
        for i, pid in enumerate(after[split]["pair_id"]):
            if before[split]["emotion_source"][i] == "manifest":  # manifest labels always win
                assert [after[split][c][i] for c in ("emotion", "emotion_source", "emotion_score")] == [
                    before[split][c][i] for c in ("emotion", "emotion_source", "emotion_score")
                ]
                continue
            probs = top[pid]
            assert after[split]["emotion_source"][i] == "passt-tiny:random-seed0"
            assert after[split]["emotion_score"][i] == pytest.approx(probs.max(), abs=1e-5)
            assert after[split]["emotion"][i] == (int(np.argmax(probs)) if probs.max() >= threshold else None)
    assert json.loads((built / "labelling.json").read_text())["threshold"] == threshold
    assert (built / "label_distribution.png").stat().st_size > 0
    assert (built / "build" / "build.json").read_text() == '{"kind": "test"}'  # the build's files come along
    assert sorted(p.name for p in built.parent.iterdir()) == ["ds"]  # no temporary folder left behind


def test_drop_and_out_leave_the_source_untouched(labeller, built, tmp_path):
    before = snapshot(built)
    summary = label_dataset(built, labeller, threshold=1.0, drop=True, out=tmp_path / "labelled")
    assert snapshot(built) == before
    after = columns(tmp_path / "labelled")
    assert summary["counts"]["dropped"] == 7 and summary["distribution"] == {
        "train": {"sad": 1, "angry": 1},
        "validation": {"tender": 1},
        "test": {},
    }
    assert after["train"]["emotion_source"] == ["manifest", "manifest"] and after["test"]["pair_id"] == []
    with pytest.raises(MipkitError, match="--out 'labelled' exists and is not empty"):
        label_dataset(built, labeller, out=tmp_path / "labelled")
    with pytest.raises(MipkitError, match="--threshold 1.5 must be between 0 and 1"):
        label_dataset(built, labeller, threshold=1.5)


def test_a_crash_while_writing_leaves_the_folder_intact(labeller, built, monkeypatch):
    import mipkit.labelling.relabel

    before = snapshot(built)

    def write_half_then_crash(dataset_dict, path):
        dataset_dict["train"].save_to_disk(str(Path(path) / "train"))
        raise OSError("disk full (simulated)")

    monkeypatch.setattr(mipkit.labelling.relabel, "_write_dataset", write_half_then_crash)
    with pytest.raises(OSError, match="simulated"):
        label_dataset(built, labeller, threshold=0.0)
    assert snapshot(built) == before
    assert sorted(p.name for p in built.parent.iterdir()) == ["ds"]


def test_label_command(built, tmp_path):
    from mipkit.cli.app import app

    refused = runner.invoke(app, ["label", str(built), "--preset", "tiny"])
    assert refused.exit_code != 0 and isinstance(refused.exception, MipkitError)
    result = runner.invoke(
        app,
        [
            "label",
            str(built),
            "--preset",
            "tiny",
            "--allow-random-weights",
            "--device",
            "cpu",
            "--threshold",
            "0",
            "--out",
            str(tmp_path / "new"),
        ],
    )
    assert result.exit_code == 0, (result.output, result.exception)
    assert "7 labelled, 3 protected" in result.output and "emotion_source passt-tiny:random-seed0" in result.output
    assert all(e is not None for split in columns(tmp_path / "new").values() for e in split["emotion"])


# ---------------------------------------------------------------------------- taxonomies and mappings
def test_taxonomies_are_data_and_name_allowed_labels():
    valence = load_taxonomy("valence3")
    assert valence.names == ["positive", "neutral", "negative"] and valence.normalize("Negative") == "negative"
    moods = load_taxonomy("audioset_moods")
    assert moods.normalize("Happy music") == moods.normalize("/t/dd00031") == moods.normalize(" HAPPY ") == "happy"
    with pytest.raises(ValueError, match="'jolly' is not in taxonomy 'audioset_moods'; allowed: happy, funny, sad"):
        moods.normalize("jolly")
    with pytest.raises(MipkitError, match="taxonomy 'nope' not found; known taxonomies: .*valence3"):
        load_taxonomy("nope")


def test_emoclim_mapping_table():
    mapping = load_mapping("emoclim_image_to_music")
    assert mapping.target.name == "audioset_moods" and len(mapping.table) == 6
    assert map_labels(["excitement", "Contentment", "amusement", "anger", "fear", "sadness", None, "awe"], mapping) == [
        "exciting",
        "happy",
        "funny",
        "angry",
        "scary",
        "sad",
        None,
        None,
    ]
    assert map_labels(["fear"], "emoclim_image_to_music") == ["scary"]
    with pytest.raises(ValueError, match="label 'joy' is not in mapping 'emoclim_image_to_music'; known: amusement"):
        map_labels(["joy"], mapping)


@pytest.mark.parametrize(
    "body, message",
    [
        ('target_taxonomy = "audioset_moods"\n', "has no \\[map\\] table"),
        ('[map]\nfear = "scary"\n', "has no target_taxonomy"),
        ('target_taxonomy = "moods7"\n[map]\nfear = "scary"\n', "taxonomy 'moods7' not found"),
        (
            'target_taxonomy = "audioset_moods"\n[map]\nfear = "terrifying"\n',
            "\\[map\\] fear = 'terrifying': .*allowed: happy, funny",
        ),
        ('target_taxonomy = "audioset_moods"\n[map]\nfear = "scary"\nFear = "sad"\n', "lists 'Fear' twice"),
        (
            'target_taxonomy = "audioset_moods"\nunmapped = ["fear"]\n[map]\nfear = "scary"\n',
            "fear is both in \\[map\\] and in unmapped",
        ),
        (
            'target_taxonomy = "valence3"\nsource_taxonomy = "audioset_moods"\n[map]\njoy = "positive"\n',
            "'joy' is not in taxonomy 'audioset_moods'",
        ),
        ('target_taxonomy = "audioset_moods"\n[map\n', "is not valid TOML"),
    ],
)
def test_mapping_validation_errors(tmp_path, body, message):
    path = tmp_path / "bad_map.toml"
    path.write_text(body)
    with pytest.raises(MipkitError, match=message):
        load_mapping(path)


def test_mapping_with_a_source_taxonomy_accepts_its_display_names(tmp_path):
    path = tmp_path / "moods_to_valence.toml"
    path.write_text(
        'target_taxonomy = "valence3"\nsource_taxonomy = "audioset_moods"\nunmapped = ["funny"]\n'
        '[map]\nhappy = "positive"\nsad = "Negative"\n'
    )
    assert map_labels(["Happy music", "/t/dd00033", "funny"], load_mapping(path)) == ["positive", "negative", None]
    with pytest.raises(MipkitError, match="mapping 'nope' not found; known mappings: emoclim_image_to_music"):
        load_mapping("nope")


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "two-renames"])
def test_swap_in_replaces_the_folder_whole(tmp_path, monkeypatch, exchange):
    import mipkit.core.files

    if not exchange:  # file systems without RENAME_EXCHANGE take the two-rename path
        monkeypatch.setattr(mipkit.core.files, "_exchange", lambda a, b: False)
    target, staged = tmp_path / "ds", tmp_path / ".ds.staged"
    (target / "train").mkdir(parents=True)
    (target / "train" / "old.arrow").write_text("old")
    (staged / "train").mkdir(parents=True)
    (staged / "train" / "new.arrow").write_text("new")
    mipkit.core.files.swap_in_folder(staged, target)
    assert snapshot(target) == {"train/new.arrow": hashlib.sha256(b"new").hexdigest()}
    assert snapshot(staged) == {"train/old.arrow": hashlib.sha256(b"old").hexdigest()}


def test_model_labels_survive_a_rebuild_of_the_same_build(labeller, tmp_path, media_server):
    """Re-running the build (resume, --retry-failed) re-assembles from the shards: model labels
    recorded by `mipkit label` in build/ are applied again; manifest labels still win."""
    from conftest import small_recipe, write_manifest
    from datasets import load_from_disk

    from mipkit.kinds.pairs import BuildOptions, build

    rows = [
        {"url": media_server.url("src0.mp4"), "start_s": 1},
        {"url": media_server.url("src1.mp4"), "start_s": 2},
        {"url": media_server.url("src2.mp4"), "start_s": 3, "emotion": "sad"},
    ]
    manifest = write_manifest(tmp_path / "m.csv", rows)
    options = BuildOptions(manifest=manifest, out=tmp_path / "ds", recipe=small_recipe())
    build(options)
    label_dataset(options.out, labeller, threshold=0.0)

    def labels():
        dataset = load_from_disk(str(options.out))
        return {
            pid: (e, src, score)
            for ds in dataset.values()
            for pid, e, src, score in zip(ds["pair_id"], ds["emotion"], ds["emotion_source"], ds["emotion_score"])
        }

    labelled = labels()
    assert sorted(src for _, src, _ in labelled.values()) == ["manifest", labeller.provenance, labeller.provenance]
    assert (options.out / "build" / "model_labels.parquet").is_file()
    build(options)  # same command again: every shard is done, the dataset is re-assembled
    assert labels() == labelled
    label_dataset(options.out, labeller, threshold=1.0, drop=True)  # nothing clears 1.0: model rows are dropped
    assert sorted(src for _, src, _ in labels().values()) == ["manifest"]
    build(options)
    assert sorted(src for _, src, _ in labels().values()) == ["manifest"]


def test_a_killed_labelling_run_leaves_no_staging_folder_behind(labeller, built, tmp_path):
    import subprocess
    import sys

    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout.strip()
    orphan = built.with_name(f".{built.name}.labelling-{dead}")
    (orphan / "train").mkdir(parents=True)
    write_marker(orphan, "a-killed-run")  # what staging_folder writes first
    label_dataset(built, labeller, threshold=0.0)
    assert not orphan.exists()
