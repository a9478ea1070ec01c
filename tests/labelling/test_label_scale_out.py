"""`mipkit label` on the build engines (a real local Ray) and on an object store (moto's S3 server)."""

from __future__ import annotations

import json

import pytest
from helpers.labelled import make_built_dataset
from typer.testing import CliRunner

from mipkit.core.errors import MipkitError
from mipkit.core.storage import Location
from mipkit.labelling.passt import make_labeller
from mipkit.labelling.relabel import label_dataset

runner = CliRunner()
SHARDS = {"train": 3, "validation": 1, "test": 2}  # several Arrow files per split: several tasks
BUCKET = "mipkit-label"


@pytest.fixture(scope="module")
def labeller():
    return make_labeller("passt", None, preset="tiny", allow_random_weights=True, device="cpu", batch_size=2, seed=0)


def _labels(url: str, fs=None) -> dict:
    """The label columns of a saved dataset; one on S3 is read from a fresh copy (datasets, loading one URL
    twice in a process, reads its first download again)."""
    import tempfile

    from datasets import load_from_disk

    if fs is not None:
        local = tempfile.mkdtemp(prefix="mipkit-test-")
        fs.invalidate_cache()
        fs.get(url.split("://", 1)[1], f"{local}/ds", recursive=True)
        url = f"{local}/ds"
    dataset = load_from_disk(url)
    return {
        split: {c: ds.data.column(c).to_pylist() for c in ("pair_id", "emotion", "emotion_source", "emotion_score")}
        for split, ds in dataset.items()
    }


def _same_labels(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for split in a:
        assert {k: v for k, v in a[split].items() if k != "emotion_score"} == {
            k: v for k, v in b[split].items() if k != "emotion_score"
        }
        assert b[split]["emotion_score"] == pytest.approx(a[split]["emotion_score"], abs=1e-5)


@pytest.fixture(scope="module")
def local_labels(labeller, tmp_path_factory):
    """The reference: --engine local, in this process."""
    folder = make_built_dataset(tmp_path_factory.mktemp("local") / "ds", SHARDS)
    summary = label_dataset(folder, labeller, threshold=0.0)
    assert summary["counts"] == {"protected": 3, "labelled": 7}
    return _labels(str(folder))


@pytest.mark.slow
def test_a_process_pool_gives_the_same_labels(labeller, local_labels, tmp_path):
    folder = make_built_dataset(tmp_path / "ds", SHARDS)
    label_dataset(folder, labeller, threshold=0.0, workers=2)
    _same_labels(local_labels, _labels(str(folder)))
    with pytest.raises(MipkitError, match="--num-gpus-per-task asks Ray for GPUs; add --engine ray"):
        label_dataset(folder, labeller, num_gpus_per_task=1)


@pytest.mark.slow
def test_ray_engine_gives_the_labels_of_the_local_engine(local_labels, tmp_path):
    pytest.importorskip("ray")
    from mipkit.cli.app import app

    folder = make_built_dataset(tmp_path / "ds", SHARDS)
    args = ["label", str(folder), "--preset", "tiny", "--allow-random-weights", "--device", "cpu"]
    args += ["--batch-size", "2", "--threshold", "0", "--engine", "ray", "--workers", "2"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    assert "7 labelled, 3 protected" in result.output
    _same_labels(local_labels, _labels(str(folder)))
    result = runner.invoke(app, [*args, "--num-gpus-per-task", "1"])  # a local Ray without GPUs
    assert isinstance(result.exception, MipkitError)
    assert "--num-gpus-per-task 1: the Ray cluster has 0 GPU(s)" in str(result.exception)


# ---------------------------------------------------------------------------- on an object store
@pytest.fixture(scope="module")
def s3():
    pytest.importorskip("moto.server")
    pytest.importorskip("s3fs")
    from helpers.object_store import make_bucket, moto_s3_server

    with moto_s3_server() as endpoint:
        yield make_bucket(BUCKET), endpoint


def _upload(fs, tmp_path, prefix: str) -> str:
    folder = make_built_dataset(tmp_path / prefix, SHARDS)
    fs.put(str(folder), f"{BUCKET}/{prefix}", recursive=True)
    return f"s3://{BUCKET}/{prefix}"


def test_label_a_dataset_on_s3_in_place_and_to_a_new_prefix(s3, labeller, local_labels, tmp_path):
    from mipkit.cli.app import app
    from mipkit.pipeline.assemble import MODEL_LABELS_FILE

    fs, endpoint = s3
    options = {"endpoint_url": endpoint}
    url = _upload(fs, tmp_path, "inplace")
    args = ["label", url, "--preset", "tiny", "--allow-random-weights", "--device", "cpu", "--batch-size", "2"]
    args += ["--threshold", "0", "--storage-options", json.dumps(options)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)
    _same_labels(local_labels, _labels(url, fs))
    fs.invalidate_cache()
    assert fs.exists(f"{BUCKET}/inplace/build/{MODEL_LABELS_FILE}")  # a build folder: re-assembly keeps them
    assert not fs.exists(f"{BUCKET}/.inplace.labelling")  # the staged copy is gone
    text = fs.cat_file(f"{BUCKET}/inplace/labelling.json").decode()
    assert endpoint not in text and "testing" not in text  # no endpoint or credential written

    source = _upload(fs, tmp_path, "source")
    before = sorted(fs.find(f"{BUCKET}/source"))
    label_dataset(Location(source), labeller, threshold=0.0, out=Location(f"s3://{BUCKET}/labelled"))
    _same_labels(local_labels, _labels(f"s3://{BUCKET}/labelled", fs))
    fs.invalidate_cache()
    assert sorted(fs.find(f"{BUCKET}/source")) == before
    assert fs.exists(f"{BUCKET}/labelled/.mipkit-owner")
    with pytest.raises(MipkitError, match="labelled' exists and is not empty"):
        label_dataset(Location(source), labeller, out=Location(f"s3://{BUCKET}/labelled"))
    # A store dataset labelled into a local folder.
    label_dataset(Location(source), labeller, threshold=0.0, out=tmp_path / "here")
    _same_labels(local_labels, _labels(str(tmp_path / "here")))


def test_a_run_killed_while_copying_on_s3_is_finished_by_the_next(s3, labeller, local_labels, tmp_path, monkeypatch):
    import mipkit.labelling.relabel as relabel

    fs, endpoint = s3
    url = _upload(fs, tmp_path, "killed")
    copies, copy_tree = [], relabel.copy_tree

    def copy_then_die(source, target):
        if copies:
            raise KeyboardInterrupt  # as a kill between two split copies
        copies.append(source)
        copy_tree(source, target)

    monkeypatch.setattr(relabel, "copy_tree", copy_then_die)
    with pytest.raises(KeyboardInterrupt):
        label_dataset(Location(url), labeller, threshold=0.0)
    fs.invalidate_cache()
    assert not fs.exists(f"{BUCKET}/killed/dataset_dict.json")  # half copied: not loadable, never half old
    assert fs.exists(f"{BUCKET}/.killed.labelling/dataset_dict.json")
    monkeypatch.undo()
    label_dataset(Location(url), labeller, threshold=0.0)
    _same_labels(local_labels, _labels(url, fs))
    fs.invalidate_cache()
    assert not fs.exists(f"{BUCKET}/.killed.labelling")
