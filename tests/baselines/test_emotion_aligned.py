"""`mipkit eval RUN --emotion-aligned`: unpaired image and music sets, EMO-CLIM relevance (tiny preset, CPU)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from baselines.eval.metrics import label_metrics
from tests.baselines.test_hgclim_train import FAST, eval_app, train
from tests.helpers.synthetic import EMOTIONS, make_pair_dataset

# the inverse of emoclim_image_to_music; "tender" has no image counterpart: its images become "awe" (unmapped)
IMAGE_NAME = {
    "happy": "contentment",
    "funny": "amusement",
    "sad": "sadness",
    "tender": "awe",
    "exciting": "excitement",
    "angry": "anger",
    "scary": "fear",
}
N_TEST = 24
PERM = torch.randperm(N_TEST, generator=torch.Generator().manual_seed(7))  # the music set is not in pair order


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("aligned") / "pairs"
    make_pair_dataset(out, 32, 8, N_TEST, seed=1)
    return out


@pytest.fixture(scope="module")
def run(data, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("aligned_runs") / "run"
    result = train(
        "--dataset",
        str(data),
        "--out",
        str(run),
        "--epochs",
        "1",
        "--no-tensorboard",
        "--cache-dir",
        str(tmp_path_factory.mktemp("aligned_cache")),
        *FAST,
    )
    assert result.exit_code == 0, result.output
    return run


@pytest.fixture(scope="module")
def sets(data, tmp_path_factory) -> dict:
    """An image-only set (string labels in Mikels' names, and upper-case music names) and a shuffled music-only set."""
    import datasets

    test = datasets.load_from_disk(str(data))["test"]
    emotion = [None if e is None else EMOTIONS[e] for e in test["emotion"]]
    images = test.select_columns(["image"])
    images = images.add_column("mood", [None if e is None else IMAGE_NAME[e] for e in emotion])
    images = images.add_column("name_upper", [None if e is None else e.upper() for e in emotion])
    root = tmp_path_factory.mktemp("aligned_sets")
    datasets.DatasetDict({"test": images}).save_to_disk(str(root / "images"))
    music = test.select_columns(["audio", "emotion"]).select(PERM.tolist())
    datasets.DatasetDict({"test": music}).save_to_disk(str(root / "music"))
    labels = torch.tensor([-1 if e is None else e for e in test["emotion"]])
    return {"images": root / "images", "music": root / "music", "labels": labels, "emotion": emotion}


def evaluate(run: Path, sets: dict, *extra: str):
    return CliRunner().invoke(
        eval_app,
        [
            "eval",
            str(run),
            "--emotion-aligned",
            "--images",
            str(sets["images"]),
            "--music",
            str(sets["music"]),
            "--workers",
            "0",
            "--device",
            "cpu",
            *extra,
        ],
    )


def paired_embeddings(run: Path, data: Path):
    """The test split's embeddings through the paired evaluation path (same model, same encoders)."""
    from baselines.data.pairs import load_pair_dataset
    from baselines.eval.retrieval import evaluate_model
    from baselines.tasks.hgclim import load_run_model

    config = json.loads((run / "config.json").read_text())
    model, _ = load_run_model(run, config, "latest", torch.device("cpu"))
    _, v, m = evaluate_model(
        model, load_pair_dataset(str(data)), "test", torch.device("cpu"), None, log=lambda _msg: None
    )
    return v, m


def test_emotion_aligned_json_counts_and_metrics_match_label_metrics(run, data, sets):
    result = evaluate(run, sets, "--image-label-column", "mood", "--mapping", "emoclim_image_to_music", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    for direction in ("i2m", "m2i"):
        assert set(out[direction]) == {"p@1", "p@5", "mrr", "map"}
    assert out["mapping"] == "emoclim_image_to_music" and out["image_label_column"] == "mood"
    labels, emotion = sets["labels"], sets["emotion"]
    n_unlabelled = int((labels < 0).sum())
    n_awe = emotion.count("tender")
    assert n_awe > 0 and n_unlabelled > 0  # the fixture exercises both kinds of skipped images
    assert out["counts"] == {
        "images": N_TEST,
        "music": N_TEST,
        "skipped": n_unlabelled + n_awe,
        "skipped_unmapped": n_awe,
        "skipped_unlabelled": n_unlabelled,
        "music_unlabelled": n_unlabelled,
    }
    assert out["skipped_labels"] == {"awe": n_awe}
    assert out["classes"]["happy"]["music"] == emotion.count("happy")
    assert out["classes"]["tender"] == {"images": 0, "music": n_awe}
    assert json.loads((run / "eval_emotion_aligned.json").read_text())["i2m"] == out["i2m"]

    # known relevance: the image's own pair label, except tender (awe: no counterpart); music shuffled
    v, m = paired_embeddings(run, data)
    image_labels = torch.where(labels == EMOTIONS.index("tender"), -1, labels)
    music_labels, m = labels[PERM], m[PERM]
    sim = v @ m.T
    expected = {
        "i2m": label_metrics(sim, image_labels, music_labels),
        "m2i": label_metrics(sim.T, music_labels, image_labels),
    }
    for direction in ("i2m", "m2i"):
        for key, value in expected[direction].items():
            assert out[direction][key] == pytest.approx(value, abs=1e-5), (direction, key)
    assert out["queries"]["i2m"] == N_TEST - n_unlabelled - n_awe
    assert out["queries"]["m2i"] == N_TEST - n_unlabelled - n_awe  # tender clips have no relevant image

    # mapping none: names compared case-insensitively, every labelled image counts (features from the cache)
    same = evaluate(run, sets, "--image-label-column", "name_upper", "--json")
    assert same.exit_code == 0, same.output
    plain = json.loads(same.stdout)
    assert plain["mapping"] == "none" and plain["counts"]["skipped"] == n_unlabelled
    assert plain["i2m"]["map"] == pytest.approx(label_metrics(sim, labels, music_labels)["map"], abs=1e-5)

    table = evaluate(run, sets, "--image-label-column", "mood", "--mapping", "emoclim_image_to_music")
    assert table.exit_code == 0 and "music→image" in table.stdout and "awe" in table.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["--image-label-column", "nope", "--mapping", "emoclim_image_to_music"], "no label column 'nope'"),
        (["--image-label-column", "mood", "--mapping", "nosuch"], "mapping 'nosuch' not found"),
        (["--image-label-column", "mood"], "no image label maps to a music label with --mapping none"),
        (["--image-label-column", "mood", "--split", "train"], "no split 'train'"),
    ],
)
def test_emotion_aligned_errors_are_one_line(run, sets, args, message):
    result = evaluate(run, sets, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and len(result.output.strip().splitlines()) == 1, result.output


def test_emotion_aligned_rejects_other_inputs(run, sets, tmp_path):
    def one_line(result, message):
        assert result.exit_code == 2 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1, result.output

    images_as_music = dict(sets, music=sets["images"])
    one_line(
        evaluate(run, images_as_music, "--image-label-column", "mood"), "--music: the dataset has no 'audio' column"
    )
    other = tmp_path / "iiclvm_run"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({"task": "iiclvm"}))
    one_line(evaluate(other, sets, "--image-label-column", "mood"), "HG-CLIM")
    one_line(
        CliRunner().invoke(eval_app, ["eval", str(run), "--emotion-aligned", "--images", str(sets["images"])]),
        "needs both --images",
    )
