"""Smoke test of benchmarks/hgclim_ablation.py: the data has both signals and a tiny run gives the table."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from baselines.losses import LOSS_VARIANTS

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "hgclim_ablation.py"


def _bench():
    spec = importlib.util.spec_from_file_location("hgclim_ablation", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_controlled_features_share_the_class_across_pairs_and_the_instance_within_a_pair():
    bench = _bench()
    args = bench.parse(["--train", "400", "--test", "10", "--noise", "0.0", "--instance-scale", "1.0"])
    world = bench.make_world(args, 0)["train"]
    v = torch.nn.functional.normalize(world["raw_v"] - world["raw_v"].mean(0), dim=-1)
    labels = world["labels"]
    same_class = labels[:, None] == labels[None, :]
    sim = v @ v.T
    off_diagonal = ~torch.eye(len(labels), dtype=torch.bool)
    # coarse signal: images of one class are closer to each other than to other classes
    assert sim[same_class & off_diagonal].mean() > sim[~same_class].mean() + 0.1
    # fine signal: music features identify their own image better than same-class music (linear probe)
    m = world["raw_m"] - world["raw_m"].mean(0)
    w = torch.linalg.lstsq(m, world["raw_v"] - world["raw_v"].mean(0)).solution
    pred = torch.nn.functional.normalize(m @ w, dim=-1)
    cross = pred @ v.T
    own = cross.diagonal()
    same_class_other = cross.masked_fill(~(same_class & off_diagonal), float("-inf")).max(dim=1).values
    assert (own > same_class_other).float().mean() > 0.5


def test_a_tiny_ablation_run_writes_every_loss_and_the_verdict():
    bench = _bench()
    args = bench.parse(
        [
            "--train",
            "64",
            "--test",
            "32",
            "--steps",
            "3",
            "--batch-size",
            "16",
            "--seeds",
            "0",
            "1",
            "--proj-hidden",
            "16",
            "--embed-dim",
            "8",
        ]
    )
    body, result = bench.run(args)
    for variant in LOSS_VARIANTS:
        assert f"| {variant} |" in body
    assert "Paper order" in body and set(result["means"]) == set(LOSS_VARIANTS)
    assert all(0.0 < value <= 1.0 for value in result["means"].values())
