"""Builds to an object store: a real S3 protocol server (moto) on 127.0.0.1, s3fs as the client."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from conftest import small_recipe, standard_split_of, write_manifest

pytest.importorskip("moto.server")
pytest.importorskip("s3fs")

from helpers.object_store import S3_ENV, make_bucket, moto_s3_server  # noqa: E402

from mipkit.core.storage import Location  # noqa: E402
from mipkit.kinds.pairs import BuildOptions, build  # noqa: E402

BUCKET = "mipkit-test"


@pytest.fixture(scope="module")
def s3():
    with moto_s3_server() as endpoint:
        yield make_bucket(BUCKET), endpoint


def _pair_ids(dataset) -> list[str]:
    return sorted(pid for split in dataset.values() for pid in split["pair_id"])


def _cli(*args, env=None, timeout=600):
    return subprocess.run(
        [sys.executable, "-m", "mipkit", *args], capture_output=True, text=True, timeout=timeout, env=env
    )


def test_build_to_s3_loads_back_decoded_and_status_reads_it(s3, standard_manifest, media_server, built_dataset):
    from datasets import load_from_disk

    fs, endpoint = s3
    out = Location(f"s3://{BUCKET}/run")
    summary = build(
        BuildOptions(
            manifest=standard_manifest, out=out, recipe=small_recipe(), split_of=standard_split_of(media_server)
        )
    )
    local_out, local_summary = built_dataset
    assert summary["splits"] == local_summary["splits"] and summary["counts"] == local_summary["counts"]

    dataset = load_from_disk(f"s3://{BUCKET}/run", storage_options={"endpoint_url": endpoint})
    assert _pair_ids(dataset) == _pair_ids(load_from_disk(str(local_out)))
    row = dataset["train"][0]
    assert row["image"].size[0] > 0  # decoded to a PIL image
    samples = row["audio"].get_all_samples()  # torchcodec decoder over the FLAC bytes
    assert samples.sample_rate == 32000 and samples.data.shape[-1] == 320000

    stats = json.loads(fs.cat_file(f"{BUCKET}/run/build/shards/00000/stats.json"))
    assert stats["built_on"]["host"]
    assert fs.exists(f"{BUCKET}/run/label_distribution.png")
    # Nothing of the credentials or endpoint is written into the build.
    for path in fs.find(f"{BUCKET}/run/build"):
        if path.endswith((".json", ".jsonl")):
            text = fs.cat_file(path).decode()
            assert S3_ENV["AWS_SECRET_ACCESS_KEY"] not in text and endpoint not in text

    status = _cli("status", f"s3://{BUCKET}/run", "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)
    assert report["counts"] == summary["counts"] and report["shards"]["done"] == report["shards"]["total"]
    shown = _cli("inspect", f"s3://{BUCKET}/run")
    assert shown.returncode == 0 and "train" in shown.stdout, shown.stderr


def test_push_to_hub_to_folder_reads_a_build_on_s3(s3, tmp_path):
    from datasets import load_dataset

    fs, endpoint = s3
    if not fs.exists(f"{BUCKET}/run/dataset_dict.json"):
        pytest.skip("needs the build of the test above")
    release = tmp_path / "release"
    options = json.dumps({"endpoint_url": endpoint})
    result = _cli(
        "push-to-hub", f"s3://{BUCKET}/run", "me/pairs", "--to-folder", str(release), "--storage-options", options
    )
    assert result.returncode == 0, result.stderr
    card = (release / "README.md").read_text()
    assert endpoint not in card
    assert sum(len(split) for split in load_dataset(str(release)).values()) > 0


def test_push_to_hub_to_folder_on_s3_from_s3(s3, tmp_path):
    from datasets import load_dataset

    fs, endpoint = s3
    if not fs.exists(f"{BUCKET}/run/dataset_dict.json"):
        pytest.skip("needs the build of the first test")
    options = json.dumps({"endpoint_url": endpoint})
    args = ["push-to-hub", f"s3://{BUCKET}/run", "me/pairs", "--storage-options", options, "--to-folder"]
    result = _cli(*args, f"s3://{BUCKET}/release")
    assert result.returncode == 0, result.stderr
    assert f"'train': 's3://{BUCKET}/release/data/train-*.parquet'" in result.stdout  # how to check it
    fs.invalidate_cache()
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.find(f"{BUCKET}/release"))
    assert "README.md" in names and "label_distribution.png" in names and ".mipkit-owner" in names
    card = fs.cat_file(f"{BUCKET}/release/README.md").decode()
    assert endpoint not in card and S3_ENV["AWS_SECRET_ACCESS_KEY"] not in card
    local = tmp_path / "local"
    assert _cli(*args, str(local)).returncode == 0
    # force_redownload: datasets may take a cached earlier load of another folder for this one
    expected = {split: len(ds) for split, ds in load_dataset(str(local), download_mode="force_redownload").items()}
    # datasets reads the release on the store through fsspec, split by split from the card's file patterns.
    remote = load_dataset(
        "parquet",
        data_files={s: f"s3://{BUCKET}/release/data/{s}-*.parquet" for s in expected},
        storage_options={"endpoint_url": endpoint},
    )
    assert {split: len(ds) for split, ds in remote.items()} == expected and sum(expected.values()) > 0
    again = _cli(*args, f"s3://{BUCKET}/release")  # an earlier release of ours is replaced
    assert again.returncode == 0, again.stderr
    fs.invalidate_cache()
    assert sorted(p.rsplit("/", 1)[-1] for p in fs.find(f"{BUCKET}/release")) == names
    fs.pipe_file(f"{BUCKET}/foreign/notes.txt", b"not ours")
    refused = _cli(*args, f"s3://{BUCKET}/foreign")
    assert refused.returncode == 2 and "holds files mipkit did not write" in refused.stderr, refused.stderr


def test_hydrate_a_metadata_only_release_on_s3_into_s3(s3):
    from datasets import load_from_disk

    fs, endpoint = s3
    if not fs.exists(f"{BUCKET}/run/dataset_dict.json"):
        pytest.skip("needs the build of the first test")
    options = json.dumps({"endpoint_url": endpoint})
    meta = _cli("push-to-hub", f"s3://{BUCKET}/run", "me/pairs", "--metadata-only", "--storage-options", options,
                "--to-folder", f"s3://{BUCKET}/meta")  # fmt: skip
    assert meta.returncode == 0, meta.stderr
    # One --storage-options for both ends.
    hydrated = _cli("hydrate", f"s3://{BUCKET}/meta", "--out", f"s3://{BUCKET}/hydrated", "--storage-options", options)
    assert hydrated.returncode == 0, hydrated.stderr
    rebuilt = load_from_disk(f"s3://{BUCKET}/hydrated", storage_options={"endpoint_url": endpoint})
    built = load_from_disk(f"s3://{BUCKET}/run", storage_options={"endpoint_url": endpoint})
    assert _pair_ids(rebuilt) == _pair_ids(built) and len(_pair_ids(built)) > 0


def test_yt8m_build_to_s3_loads_back_and_status_reads_it(s3, tmp_path):
    from datasets import load_from_disk
    from helpers.inputs import yt8m_args_with_an_empty_split

    fs, endpoint = s3
    url = f"s3://{BUCKET}/yt8m"
    options = json.dumps({"endpoint_url": endpoint})
    args = ["build", "yt8m-title", *yt8m_args_with_an_empty_split(tmp_path / "in"), "--out", url]
    result = _cli(*args, "--storage-options", options)
    assert result.returncode == 0, result.stderr
    dataset = load_from_disk(url, storage_options={"endpoint_url": endpoint})
    assert len(dataset["train"]) > 0 and len(dataset["test"]) == 0
    assert fs.exists(f"{BUCKET}/yt8m/build/metadata.jsonl")
    status = _cli("status", url, "--json", "--storage-options", options)
    assert status.returncode == 0 and json.loads(status.stdout)["counts"]["ok"] == len(dataset["train"])
    again = _cli(*args)  # endpoint from the environment this time; a finished build is up to date
    assert again.returncode == 0 and "dataset up to date" in again.stderr, again.stderr


def test_bad_storage_options_is_one_line(tmp_path):
    result = _cli("status", f"s3://{BUCKET}/run", "--storage-options", "not json")
    assert result.returncode == 2 and "--storage-options must be a JSON object" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_kill_9_mid_build_to_s3_then_rerun_gives_exactly_the_pairs(s3, tmp_path, media_server):
    from datasets import load_from_disk

    fs, endpoint = s3
    rows = [{"url": media_server.url(f"src{i}.mp4"), "start_s": "", "emotion": "happy"} for i in range(4)]
    manifest = write_manifest(tmp_path / "m.csv", rows)
    url = f"s3://{BUCKET}/killed"
    args = ["build", "mipnet", "--manifest", str(manifest), "--out", url]
    args += ["--shard-size", "1", "--clips-per-source", "2", "--fetch-threads", "1"]
    env = {**os.environ}
    process = subprocess.Popen(
        [sys.executable, "-m", "mipkit", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 300
        while not fs.glob(f"{BUCKET}/killed/build/shards/*/stats.json"):
            assert process.poll() is None, "the build ended before it could be killed"
            assert time.time() < deadline
            fs.invalidate_cache()
            time.sleep(0.2)
    finally:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    fs.invalidate_cache()
    assert len(fs.glob(f"{BUCKET}/killed/build/shards/*/stats.json")) < 4  # it really was cut short

    result = _cli(*args, env=env)
    assert result.returncode == 0, result.stderr
    pair_ids = _pair_ids(load_from_disk(url, storage_options={"endpoint_url": endpoint}))
    assert len(pair_ids) == len(set(pair_ids)) == 8
    by_source = {}
    for pid in pair_ids:
        by_source.setdefault(pid.rsplit("_", 1)[0], []).append(pid)
    assert sorted(len(v) for v in by_source.values()) == [2, 2, 2, 2]


def test_training_reads_dataset_from_s3(s3):
    from baselines.data.pairs import dataset_display_name, load_pair_dataset

    fs, _ = s3
    if not fs.exists(f"{BUCKET}/run/dataset_dict.json"):
        pytest.skip("needs the build of the first test")
    dataset = load_pair_dataset(f"s3://{BUCKET}/run")  # endpoint from AWS_ENDPOINT_URL, as on a cluster
    assert len(dataset["train"]) > 0 and dataset_display_name(f"s3://{BUCKET}/run") == "run"
    with pytest.raises(Exception, match="no saved dataset"):
        load_pair_dataset(f"s3://{BUCKET}/nothing-here")


def test_rerun_of_a_finished_build_on_s3_writes_no_dataset_object(s3, tmp_path, media_server, capsys):
    fs, _ = s3
    rows = [{"url": media_server.url(f"src{i}.mp4"), "start_s": 2.0, "emotion": "happy"} for i in range(2)]
    manifest = write_manifest(tmp_path / "m.csv", rows)
    out = Location(f"s3://{BUCKET}/noop")
    recipe = small_recipe(**{"shards.sources_per_shard": 1})
    build(BuildOptions(manifest=manifest, out=out, recipe=recipe))

    def dataset_objects():
        found = fs.find(f"{BUCKET}/noop", detail=True, refresh=True)
        return {k: (v.get("ETag"), str(v.get("LastModified"))) for k, v in found.items() if "/build/" not in k}

    before = dataset_objects()
    capsys.readouterr()
    build(BuildOptions(manifest=manifest, out=out, recipe=recipe))
    assert "dataset up to date" in capsys.readouterr().err
    assert dataset_objects() == before
    fs.rm(f"{BUCKET}/noop/train", recursive=True)
    out.fs.invalidate_cache()  # the build's own s3fs instance in this process (a new process has no cache)
    build(BuildOptions(manifest=manifest, out=out, recipe=recipe))
    assert "dataset up to date" not in capsys.readouterr().err
    assert fs.exists(f"{BUCKET}/noop/train/state.json")


def test_one_copy_of_the_media_on_s3(s3, tmp_path, media_server):
    """Shards on S3 keep no media once assembled; a deleted dataset and a relabel still end decodable."""
    import pyarrow.parquet as pq
    from datasets import load_from_disk

    from mipkit.pipeline.assemble import write_model_labels

    fs, endpoint = s3
    rows = [{"url": media_server.url(f"src{i}.mp4"), "start_s": "", "emotion": ""} for i in range(3)]
    manifest = write_manifest(tmp_path / "m.csv", rows)
    out = Location(f"s3://{BUCKET}/onecopy")
    options = BuildOptions(
        manifest=manifest, out=out, recipe=small_recipe(**{"shards.sources_per_shard": 1, "clip.clips_per_source": 1})
    )

    copies = iter(range(10))

    def fetched():
        """The dataset as on S3 now, copied by the test's own client (datasets' client may cache what it read)."""
        fs.invalidate_cache()
        local = tmp_path / f"copy{next(copies)}"
        for name in ("dataset_dict.json", "train", "validation", "test"):
            fs.get(f"{BUCKET}/onecopy/{name}", str(local / name), recursive=name != "dataset_dict.json")
        return load_from_disk(str(local))

    def decoded() -> list[str]:
        dataset = fetched()
        for split in dataset.values():
            for row in split:
                assert row["audio"].get_all_samples().data.shape[-1] == 320000 and row["image"].size[0] > 0
        return _pair_ids(dataset)

    def shard_media() -> list[int]:
        fs.invalidate_cache()
        tables = [pq.read_table(fs.open(p)) for p in sorted(fs.glob(f"{BUCKET}/onecopy/build/shards/*/pairs.parquet"))]
        return [t.num_rows - t["audio"].null_count for t in tables]

    build(options)
    assert len(decoded()) == 3 and shard_media() == [0, 0, 0]
    arrow = sum(fs.du(f"{BUCKET}/onecopy/{split}") for split in ("train", "validation", "test"))
    assert fs.du(f"{BUCKET}/onecopy") < 1.1 * arrow  # one copy

    for split in ("train", "validation", "test"):  # the dataset deleted: its shards are fetched again
        (out / split).rmtree()  # through the build's own client, whose listing cache this clears
    (out / "dataset_dict.json").unlink()
    build(options)
    pair_ids = decoded()
    assert len(pair_ids) == 3 and shard_media() == [0, 0, 0]

    # A label for one pair: the re-assembly takes the media of every shard back from the Arrow files on S3.
    label = {
        "pair_id": pair_ids[0],
        "emotion": "sad",
        "emotion_score": 0.9,
        "emotion_source": "passt",
        "dropped": False,
    }
    write_model_labels(out / "build", [label])
    build(options)
    assert decoded() == pair_ids and shard_media() == [0, 0, 0]
    dataset = fetched()
    sources = [s for split in dataset.values() for s in split["emotion_source"]]
    assert sources.count("passt") == 1
