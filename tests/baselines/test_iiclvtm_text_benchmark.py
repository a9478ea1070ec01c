"""Smoke test of benchmarks/iiclvtm_text.py: every text variant trains and is tested with right, shuffled
and zero text; the generated text carries what the video does not."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "iiclvtm_text.py"


def _bench():
    spec = importlib.util.spec_from_file_location("iiclvtm_text", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_tiny_run_reports_right_shuffled_and_zero_text_for_each_wiring():
    bench = _bench()
    args = bench.parse(
        [
            "--train",
            "16",
            "--test",
            "8",
            "--seconds",
            "6",
            "--segments",
            "4",
            "--hidden",
            "4",
            "--steps",
            "2",
            "--batch-size",
            "8",
            "--seeds",
            "0",
            "--variants",
            "none",
            "h0",
            "h0+c0 + forget bias 1",
            "h0+add",
        ]
    )
    world = bench.make_world(args, 0)
    assert world["train"]["video"].dtype == torch.uint8 and world["train"]["video"].shape == (16, 6, 1024)
    assert world["train"]["text"].shape == (16, 64) and world["train"]["audio"].shape == (16, 6, 128)
    table = bench.run(args)
    assert table.count("\n") == 5  # header, rule, four variants
    none_row = next(line for line in table.splitlines() if line.startswith("| none |"))
    assert none_row.count("—") == 4  # no text: every shuffled / zero column is empty
    add_row = next(line for line in table.splitlines() if line.startswith("| h0+add |"))
    assert "—" not in add_row
