"""A real two-node Ray cluster on this machine (ray.cluster_utils.Cluster), building to S3 (moto)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import write_manifest

pytest.importorskip("ray")
pytest.importorskip("moto.server")
pytest.importorskip("s3fs")

from helpers.object_store import make_bucket, moto_s3_server  # noqa: E402

BUCKET = "mipkit-cluster"
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def cluster():
    """Head and a second node, one CPU each; their workers see this checkout and the S3 server."""
    from ray.cluster_utils import Cluster

    saved = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), saved) if p)
    with moto_s3_server() as endpoint:
        fs = make_bucket(BUCKET)
        nodes = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
        second = nodes.add_node(num_cpus=1)
        nodes.wait_for_nodes()
        try:
            yield nodes, second, fs, endpoint
        finally:
            nodes.shutdown()
            if saved is None:
                os.environ.pop("PYTHONPATH", None)
            else:
                os.environ["PYTHONPATH"] = saved


def _args(manifest, out, address):
    return [
        sys.executable, "-m", "mipkit", "build", "mipnet", "--manifest", str(manifest), "--out", out,
        "--engine", "ray", "--ray-address", address, "--shard-size", "1", "--clips-per-source", "2",
    ]  # fmt: skip


def _manifest(tmp_path, server, sources=4):
    rows = [{"url": server.url(f"src{i}.mp4"), "start_s": "", "emotion": "happy"} for i in range(sources)]
    return write_manifest(tmp_path / "m.csv", rows)


def _node_ids(fs, prefix) -> list[str]:
    fs.invalidate_cache()
    return [
        json.loads(fs.cat_file(p))["built_on"].get("ray_node_id")
        for p in fs.glob(f"{prefix}/build/shards/*/stats.json")
    ]


def _pair_ids(url, endpoint) -> list[str]:
    from datasets import load_from_disk

    dataset = load_from_disk(url, storage_options={"endpoint_url": endpoint})
    return sorted(pid for split in dataset.values() for pid in split["pair_id"])


def test_local_out_with_two_nodes_is_refused(cluster, tmp_path, media_server):
    nodes, _, _, _ = cluster
    result = subprocess.run(
        _args(_manifest(tmp_path, media_server, 1), str(tmp_path / "ds"), nodes.address),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2, result.stderr
    assert "use an object-store URL" in result.stderr and "--shared-fs" in result.stderr
    assert not (tmp_path / "ds" / "build").exists()


@pytest.mark.slow
def test_shards_spread_over_both_nodes_and_a_lost_node_costs_only_its_shards(cluster, tmp_path, media_server):
    nodes, second, fs, endpoint = cluster
    manifest = _manifest(tmp_path, media_server)
    result = subprocess.run(
        _args(manifest, f"s3://{BUCKET}/both", nodes.address), capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr
    built_on = _node_ids(fs, f"{BUCKET}/both")
    assert len(built_on) == 4 and len(set(built_on)) == 2  # every shard records its node; both nodes worked
    complete = _pair_ids(f"s3://{BUCKET}/both", endpoint)
    assert len(complete) == len(set(complete)) == 8

    # Again, and the second node dies once the first shard is committed.
    args = _args(manifest, f"s3://{BUCKET}/lost", nodes.address)
    process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not _node_ids(fs, f"{BUCKET}/lost"):
        assert process.poll() is None and time.time() < deadline
        time.sleep(0.2)
    nodes.remove_node(second)
    process.communicate(timeout=600)
    reruns = 0
    if process.returncode != 0 or len(_node_ids(fs, f"{BUCKET}/lost")) < 4:
        reruns += 1
        rerun = subprocess.run(args, capture_output=True, text=True, timeout=600)
        assert rerun.returncode == 0, rerun.stderr
    assert reruns <= 1
    assert _pair_ids(f"s3://{BUCKET}/lost", endpoint) == complete


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mipkit", *args], capture_output=True, text=True, timeout=timeout)


def _two_nodes(cluster) -> str:
    """The cluster's address, with a second node again if an earlier test removed it."""
    nodes = cluster[0]
    if len(nodes.list_all_nodes()) < 2:
        nodes.add_node(num_cpus=1)
        nodes.wait_for_nodes()
    return nodes.address


def _one_line_refusal(result: subprocess.CompletedProcess, *parts: str) -> None:
    assert result.returncode == 2, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and all(p in result.stderr for p in parts), result.stderr


def test_yt8m_build_with_a_local_out_on_two_nodes_is_refused(cluster, tmp_path):
    from helpers.inputs import yt8m_args_with_an_empty_split

    address = _two_nodes(cluster)
    inputs = yt8m_args_with_an_empty_split(tmp_path / "in")
    result = _cli("build", "yt8m-title", *inputs, "--out", str(tmp_path / "ds"), "--engine", "ray",
                  "--ray-address", address)  # fmt: skip
    _one_line_refusal(result, "--out 'ds' is a local folder", "2 nodes", "use an object-store URL", "--shared-fs")
    assert not (tmp_path / "ds" / "build").exists()


LABEL = ["--preset", "tiny", "--allow-random-weights", "--device", "cpu", "--threshold", "0", "--engine", "ray"]


def test_label_of_a_local_folder_on_two_nodes_is_refused_and_absent_gpus_fail_fast(cluster, tmp_path):
    from helpers.labelled import make_built_dataset

    address = _two_nodes(cluster)
    folder = make_built_dataset(tmp_path / "ds")
    before = sorted((p.name, p.stat().st_mtime_ns) for p in folder.rglob("*"))
    result = _cli("label", str(folder), *LABEL, "--ray-address", address)
    _one_line_refusal(result, "DATASET_DIR 'ds' is a local folder", "2 nodes", "object-store URL", "--shared-fs")
    # With --shared-fs the folder passes; a GPU per task on a cluster without GPUs is refused, not waited for.
    result = _cli("label", str(folder), *LABEL, "--ray-address", address, "--shared-fs",
                  "--num-gpus-per-task", "1")  # fmt: skip
    _one_line_refusal(result, "--num-gpus-per-task 1: the Ray cluster has 0 GPU(s)", "leave --num-gpus-per-task away")
    assert sorted((p.name, p.stat().st_mtime_ns) for p in folder.rglob("*")) == before


@pytest.mark.slow
def test_label_and_yt8m_build_on_s3_through_two_nodes(cluster, tmp_path):
    from helpers.inputs import yt8m_args_with_an_empty_split
    from helpers.labelled import make_built_dataset

    _, _, fs, endpoint = cluster
    address = _two_nodes(cluster)
    folder = make_built_dataset(tmp_path / "ds", {"train": 2, "validation": 1, "test": 1})
    reference = _cli("label", str(folder), *LABEL[:-2], "--out", str(tmp_path / "reference"))
    assert reference.returncode == 0, reference.stderr
    fs.put(str(folder), f"{BUCKET}/tolabel", recursive=True)
    result = _cli("label", f"s3://{BUCKET}/tolabel", *LABEL, "--ray-address", address, timeout=600)
    assert result.returncode == 0, result.stderr
    ours = _labels(f"s3://{BUCKET}/tolabel", endpoint)
    theirs = _labels(str(tmp_path / "reference"), None)
    assert [row[:3] for row in ours] == [row[:3] for row in theirs]
    assert [row[3] for row in ours] == pytest.approx([row[3] for row in theirs], abs=1e-5)

    inputs = yt8m_args_with_an_empty_split(tmp_path / "in")
    result = _cli("build", "yt8m-title", *inputs, "--out", f"s3://{BUCKET}/yt8m", "--engine", "ray",
                  "--ray-address", address, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr
    built_on = _node_ids(fs, f"{BUCKET}/yt8m")
    assert len(built_on) == 2 and all(built_on)  # both TFRecord files built as Ray tasks, each records its node
    from datasets import load_from_disk

    dataset = load_from_disk(f"s3://{BUCKET}/yt8m", storage_options={"endpoint_url": endpoint})
    assert len(dataset["train"]) > 0 and len(dataset["test"]) == 0


def _labels(url: str, endpoint: str | None) -> list[tuple]:
    """(pair_id, emotion, emotion_source, emotion_score) of every row, by pair id."""
    from datasets import load_from_disk

    dataset = load_from_disk(url, storage_options={"endpoint_url": endpoint}) if endpoint else load_from_disk(url)
    columns = ("pair_id", "emotion", "emotion_source", "emotion_score")
    return sorted(row for ds in dataset.values() for row in zip(*(ds.data.column(c).to_pylist() for c in columns)))
