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
