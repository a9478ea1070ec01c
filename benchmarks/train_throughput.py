"""HG-CLIM training throughput: cached encoder features versus encoders recomputed every step.

Runs the real training loop (``baselines.train.main``) twice on the same synthetic dataset (or on
``--dataset DIR``): once on the embedding cache, once with ``--no-cache`` (DataLoader + both encoders
every step), and reports training samples/s from the loop's own step timings (first step of each
run excluded as warm-up), the encoder throughput of the cache build, and the ratio.

    python benchmarks/train_throughput.py                      # tiny preset, CPU
    python benchmarks/train_throughput.py --preset full --random-init --pairs 256 --batch-size 64
    python benchmarks/train_throughput.py --write              # append the table to docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _report import append_section  # noqa: E402


def _train_rates(run_dir: Path) -> dict:
    from baselines.runtime.logging import read_log

    records = [r for r in read_log(run_dir / "log.jsonl") if r.get("kind") == "train"]
    steps = [r for r in records if r["step"] > 1]  # the first step carries one-off costs
    if not steps:
        steps = records
    seconds = sum(r["step_time"] for r in steps)
    return {
        "steps": len(steps),
        "seconds": seconds,
        "step_time_median": statistics.median(r["step_time"] for r in steps),
        "data_time_median": statistics.median(r["data_time"] for r in steps),
    }


def _run(common: list[str], out: Path, extra: list[str]) -> None:
    from typer.testing import CliRunner

    from baselines.cli.app import train_app

    result = CliRunner().invoke(train_app, ["hgclim", *common, "--out", str(out), *extra])
    if result.exit_code != 0:
        sys.stderr.write(result.output)
        if result.exception and not isinstance(result.exception, SystemExit):
            raise result.exception
        raise SystemExit(f"training run failed (exit {result.exit_code})")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", choices=("tiny", "full"), default="tiny")
    p.add_argument("--random-init", action="store_true", help="needed for --preset full without weights")
    p.add_argument("--dataset", help="an existing dataset folder (default: a synthetic one)")
    p.add_argument("--pairs", type=int, default=128, help="training pairs of the synthetic dataset")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1))
    p.add_argument("--device", default="auto")
    p.add_argument("--write", action="store_true", help="append the table to docs/benchmarks.md")
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="mipkit-bench-") as tmp:
        tmp = Path(tmp)
        dataset = args.dataset
        if dataset is None:
            from tests.helpers.synthetic import make_pair_dataset

            dataset = str(tmp / "data")
            make_pair_dataset(dataset, args.pairs, max(8, args.pairs // 8), max(8, args.pairs // 8), seed=0)
        common = [
            "--dataset",
            dataset,
            "--preset",
            args.preset,
            "--epochs",
            str(args.epochs),
            "--batch-size",
            str(args.batch_size),
            "--workers",
            str(args.workers),
            "--device",
            args.device,
            "--log-every",
            "1",
            "--quiet",
            "--no-tensorboard",
            "--eval-split",
            "validation",
        ]
        if args.random_init:
            common.append("--random-init")

        t0 = time.perf_counter()
        _run(common, tmp / "cached", ["--cache-dir", str(tmp / "cache")])
        cached_wall = time.perf_counter() - t0
        train_cache = __import__("torch").load(tmp / "cache" / "train.pt", weights_only=True)
        encode_seconds = float(train_cache["encode_seconds"])
        n_train = int(train_cache["raw_v"].shape[0])
        t0 = time.perf_counter()
        _run(common, tmp / "uncached", ["--no-cache"])
        uncached_wall = time.perf_counter() - t0

        cached, uncached = _train_rates(tmp / "cached"), _train_rates(tmp / "uncached")
        config = json.loads((tmp / "cached" / "config.json").read_text())
    global_batch = min(args.batch_size, n_train)
    # median step time: robust to other processes on a shared machine
    rate_c = global_batch / cached["step_time_median"]
    rate_u = global_batch / uncached["step_time_median"]
    import torch

    device = "cuda" if (args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())) else "cpu"
    body = "\n".join(
        [
            f"preset `{args.preset}`, device {device}, {n_train} training pairs, batch {global_batch}, "
            f"{args.epochs} epochs, {args.workers} DataLoader workers (uncached path); loss `{config['loss']}`.",
            "",
            "| path | training samples/s | median step (ms) | median data wait (ms) | wall of the run (s) |",
            "| --- | ---: | ---: | ---: | ---: |",
            f"| cached features | {rate_c:,.0f} | {cached['step_time_median'] * 1e3:.1f} | "
            f"{cached['data_time_median'] * 1e3:.2f} | {cached_wall:.1f} (incl. cache build {encode_seconds:.1f}) |",
            f"| encoders every step (`--no-cache`) | {rate_u:,.1f} | {uncached['step_time_median'] * 1e3:.1f} | "
            f"{uncached['data_time_median'] * 1e3:.2f} | {uncached_wall:.1f} |",
            "",
            f"Ratio cached / uncached: **{rate_c / rate_u:,.0f}x** training samples/s. "
            f"Encoder pass of the cache build: {n_train / encode_seconds:,.1f} pairs/s "
            f"(image + music, decode included). samples/s = batch / median step time (steps after the first).",
        ]
    )
    print(body)
    if args.write:
        print(
            f"appended to {append_section('HG-CLIM training throughput, cached vs uncached (benchmarks/train_throughput.py)', body)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
