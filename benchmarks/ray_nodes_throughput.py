"""Build throughput on a Ray cluster of 1 node vs 2 nodes (one CPU each) on this machine, to S3 (moto).

Generated videos are served from 127.0.0.1; each run builds the same manifest to its own prefix with
``mipkit build mipnet --engine ray --ray-address``. The ratio matters, not the absolute figures (both
nodes share this machine's cores).

    python benchmarks/ray_nodes_throughput.py --sources 8 --write
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from _report import append_section  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=30.0, help="length of each generated video")
    parser.add_argument("--write", action="store_true", help="append the figures to docs/benchmarks.md")
    args = parser.parse_args()

    from helpers.object_store import make_bucket, moto_s3_server
    from ray.cluster_utils import Cluster

    from mipkit.demo.mediaserver import MediaServer
    from mipkit.demo.synthetic_media import make_video, spec_for_index

    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    work = Path(tempfile.mkdtemp(prefix="mipkit-raybench-"))
    for i in range(args.sources):
        make_video(work / f"src{i}.mp4", spec_for_index(i, args.seconds))
    results = {}
    with MediaServer(work) as server, moto_s3_server():
        make_bucket("bench")
        manifest = work / "m.csv"
        with manifest.open("w", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["url", "start_s"])
            writer.writerows([server.url(f"src{i}.mp4"), 5.0] for i in range(args.sources))
        for nodes in (1, 2):
            cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
            for _ in range(nodes - 1):
                cluster.add_node(num_cpus=1)
            cluster.wait_for_nodes()
            try:
                command = [
                    sys.executable, "-m", "mipkit", "build", "mipnet", "--manifest", str(manifest),
                    "--out", f"s3://bench/nodes{nodes}", "--engine", "ray", "--ray-address", cluster.address,
                    "--shard-size", "1", "--fetch-threads", "1",
                ]  # fmt: skip
                began = time.perf_counter()
                subprocess.run(command, check=True, capture_output=True, timeout=1800)
                results[nodes] = time.perf_counter() - began
                print(f"{nodes} node(s): {results[nodes]:.1f} s", flush=True)
            finally:
                cluster.shutdown()
    body = "\n".join(
        [
            f"{args.sources} generated {args.seconds:.0f}-s videos on 127.0.0.1, one 10-s window each, one source per "
            "shard, output to S3 (moto on 127.0.0.1); Ray nodes of one CPU each on this one machine, so both share "
            "its cores and the other processes running on it.",
            "",
            "| nodes | seconds (whole command) | pairs per second |",
            "| --- | --- | --- |",
            *(f"| {n} | {s:.1f} | {args.sources / s:.3f} |" for n, s in results.items()),
            "",
            f"- speed-up 2 nodes vs 1: {results[1] / results[2]:.2f}x",
        ]
    )
    print(body)
    if args.write:
        append_section("Build throughput, 1 vs 2 Ray nodes (benchmarks/ray_nodes_throughput.py)", body)


if __name__ == "__main__":
    main()
