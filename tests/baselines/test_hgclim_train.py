"""End-to-end HG-CLIM training and evaluation through the CLI (tiny preset, CPU, synthetic data)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import typer
from typer.testing import CliRunner

from baselines.cli.app import eval_command, train_app
from tests.helpers.synthetic import make_pair_dataset

REPO = Path(__file__).resolve().parents[2]
N_TRAIN, N_VAL, N_TEST, BATCH = 96, 24, 24, 32  # 3 steps per epoch
FAST = [
    "--preset",
    "tiny",
    "--batch-size",
    str(BATCH),
    "--workers",
    "0",
    "--log-every",
    "1",
    "--device",
    "cpu",
    "--quiet",
]

eval_app = typer.Typer(add_completion=False)
eval_app.command("eval")(eval_command)


@eval_app.callback()
def _eval_group() -> None:
    """(test wrapper: `mipkit eval` is mounted by mipkit.cli.app)"""


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pairs") / "synthpairs"
    make_pair_dataset(out, N_TRAIN, N_VAL, N_TEST, seed=0)
    return out


@pytest.fixture(scope="module")
def cache(tmp_path_factory) -> Path:
    """One embedding cache shared by the runs (same encoders, same data): built once, reused after."""
    return tmp_path_factory.mktemp("cache")


def train(*args: str):
    result = CliRunner().invoke(train_app, ["hgclim", *args])
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def records(run: Path, kind: str) -> list[dict]:
    lines = (run / "log.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if r["kind"] == kind]


@pytest.fixture(scope="module")
def run_a(data, cache, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "run_a"
    result = train("--dataset", str(data), "--out", str(run), "--epochs", "2", "--cache-dir", str(cache), *FAST)
    assert result.exit_code == 0, result.output
    return run


def test_train_writes_logs_plots_card_and_checkpoint(run_a, data):
    for name in (
        "config.json",
        "log.jsonl",
        "loss_curves.png",
        "val_metrics.png",
        "MODEL_CARD.md",
        "eval_test.json",
        "eval_test.png",
        "checkpoints/latest.pt",
    ):
        assert (run_a / name).is_file(), name
    assert any((run_a / "tb").iterdir())
    train_records = records(run_a, "train")
    assert [r["step"] for r in train_records] == list(range(1, 7))
    for key in (
        "loss",
        "loss/coarse",
        "loss/inter",
        "loss/intra_v",
        "loss/intra_m",
        "temperature",
        "lr",
        "samples_per_s",
        "data_time",
        "step_time",
    ):
        assert all(key in r for r in train_records), key
    val = records(run_a, "val")
    assert [r["epoch"] for r in val] == [0, 1, 2]
    assert all(k in val[-1] for k in ("i2m/mrr", "i2m/r@10", "m2i/mrr", "m2i/r@10"))
    config = json.loads((run_a / "config.json").read_text())
    assert config["loss"] == "hgclim" and config["preset"] == "tiny" and config["lambda_intra"] == 1.0
    ckpt = torch.load(run_a / "checkpoints" / "latest.pt", weights_only=True)
    assert ckpt["step"] == 6 and ckpt["epoch"] == 2 and ckpt["step_in_epoch"] == 0
    assert {"model", "optimizer", "scheduler", "rng", "data_order"} <= set(ckpt)
    assert not any(k.startswith("music_encoder.net.blocks") for k in ckpt["model"])  # frozen: not stored
    card = (run_a / "MODEL_CARD.md").read_text()
    assert "--loss hgclim" in card and "random:0" in card and "synthpairs" in card and "| mrr |" in card
    assert str(data.parent) not in card  # no local absolute paths in publishable files
    assert str(data.parent) not in (run_a / "log.jsonl").read_text()


def test_eval_prints_json_with_every_key(run_a, data):
    result = CliRunner().invoke(
        eval_app,
        [
            "eval",
            str(run_a),
            "--dataset",
            str(data),
            "--split",
            "test",
            "--json",
            "--candidates",
            "8",
            "--seeds",
            "0,1",
            "--workers",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    for direction in ("i2m", "m2i"):
        assert set(out[direction]) == {"mrr", "r@1", "r@5", "r@10", "p@1", "median_rank", "mean_rank"}
        assert set(out["emotion"][direction]) == {"p@1", "p@5", "mrr", "map"}
        assert set(out["pooled"][direction]["mean"]) == set(out[direction])
        assert out["pooled"][direction]["n_candidates"] == 8
    assert out["n_pairs"] == N_TEST and out["split"] == "test"
    assert (run_a / "eval_test.json").is_file() and (run_a / "eval_test.png").is_file()
    # the final evaluation of the training run and `eval` agree (same checkpoint, same cache)
    final = json.loads((run_a / "eval_test.json").read_text())
    assert out["i2m"]["mrr"] == pytest.approx(final["i2m"]["mrr"], abs=1e-6)
    table = CliRunner().invoke(eval_app, ["eval", str(run_a), "--dataset", str(data), "--workers", "0"])
    assert table.exit_code == 0 and "emotion map" in table.stdout


def test_resume_continues_at_the_saved_step_with_identical_weights(run_a, data, cache, tmp_path):
    run_b = tmp_path / "run_b"
    common = ["--dataset", str(data), "--out", str(run_b), "--epochs", "2", "--cache-dir", str(cache), *FAST]
    assert train(*common, "--stop-at-step", "4").exit_code == 0  # mid-epoch: epoch 1, one step done
    stopped = torch.load(run_b / "checkpoints" / "latest.pt", weights_only=True)
    assert (stopped["step"], stopped["epoch"], stopped["step_in_epoch"]) == (4, 1, 1)
    assert not (run_b / "MODEL_CARD.md").exists()
    again = train(*common)
    assert again.exit_code == 2 and "--resume latest" in again.output  # never overwrite a run silently
    assert train(*common, "--resume", "latest").exit_code == 0
    assert [r["step"] for r in records(run_b, "train")] == [1, 2, 3, 4, 5, 6]
    a = torch.load(run_a / "checkpoints" / "latest.pt", weights_only=True)
    b = torch.load(run_b / "checkpoints" / "latest.pt", weights_only=True)
    assert b["step"] == a["step"] == 6
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert (run_b / "MODEL_CARD.md").is_file()


def test_resume_from_a_scale_past_the_cap_clamps_it_and_lets_it_come_back_down(data, cache, tmp_path):
    """A checkpoint whose temperature parameter sits past log(100) (an output-clamp-era run) resumes at
    1/tau = 100 and the loop's in-place clamp keeps it trainable: the poorly aligned tiny model asks for a
    smaller scale, so tau rises again (under the old output clamp it stayed at 0.01 forever)."""
    run = tmp_path / "run_cap"
    common = ["--dataset", str(data), "--out", str(run), "--epochs", "2", "--cache-dir", str(cache), *FAST]
    assert train(*common, "--stop-at-step", "1").exit_code == 0
    path = run / "checkpoints" / "latest.pt"
    ckpt = torch.load(path, weights_only=True)
    ckpt["model"]["temperature.log_inverse_tau"] = torch.tensor(math.log(1000.0))
    torch.save(ckpt, path)
    assert train(*common, "--resume", "latest").exit_code == 0
    taus = [r["temperature"] for r in records(run, "train") if r["step"] > 1]
    assert taus[0] == pytest.approx(0.01, rel=1e-5)  # clamped on load: 1/tau = 100, not 1000
    assert all(b > a for a, b in zip(taus, taus[1:])), taus  # and it moves off the cap, step after step
    final = torch.load(path, weights_only=True)["model"]["temperature.log_inverse_tau"]
    assert float(final) < math.log(100.0)


def test_training_improves_retrieval_over_the_untrained_model(data, cache, tmp_path):
    run = tmp_path / "learn"
    fast = FAST.copy()
    fast[fast.index("--batch-size") + 1] = "16"
    result = train(
        "--dataset",
        str(data),
        "--out",
        str(run),
        "--epochs",
        "6",
        "--cache-dir",
        str(cache),
        "--eval-split",
        "validation",
        "--no-tensorboard",
        *fast,
    )
    assert result.exit_code == 0, result.output
    val = records(run, "val")
    untrained = (val[0]["i2m/mrr"] + val[0]["m2i/mrr"]) / 2
    trained = (val[-1]["i2m/mrr"] + val[-1]["m2i/mrr"]) / 2
    assert trained > untrained + 0.12, (untrained, trained)  # measured: 0.13 -> 0.36
    losses = records(run, "train")
    assert losses[-1]["loss"] < losses[0]["loss"]


def test_uncached_path_computes_the_same_first_step(data, cache, tmp_path):
    """--no-cache runs the encoders every step (DataLoader path); with dropout off, step 1 matches."""
    common = ["--dataset", str(data), "--epochs", "1", "--dropout", "0", "--stop-at-step", "1", *FAST]
    assert train(*common, "--out", str(tmp_path / "cached"), "--cache-dir", str(cache)).exit_code == 0
    assert train(*common, "--out", str(tmp_path / "uncached"), "--no-cache").exit_code == 0
    assert not (tmp_path / "uncached" / "cache").exists()
    first_cached = records(tmp_path / "cached", "train")[0]
    first_uncached = records(tmp_path / "uncached", "train")[0]
    assert first_uncached["loss"] == pytest.approx(first_cached["loss"], rel=1e-4)


@pytest.mark.parametrize(
    "args, flag",
    [
        (["--image-weights", "missing-convnext.safetensors", "--music-weights", "missing.pt"], "--image-weights"),
        ([], "--random-init"),
        (["--preset", "tiny", "--loss", "clip"], "--loss"),
        (["--preset", "tiny", "--device", "tpu"], "--device"),
    ],
)
def test_input_errors_are_one_line(data, tmp_path, args, flag):
    result = train("--dataset", str(data), "--out", str(tmp_path / "run"), "--workers", "0", "--quiet", *args)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and flag in lines[0], result.output


def test_missing_dataset_is_one_line(tmp_path):
    result = train("--dataset", str(tmp_path / "nothing"), "--out", str(tmp_path / "run"), "--preset", "tiny")
    assert result.exit_code == 2 and "--dataset" in result.output and str(tmp_path) not in result.output


def test_torchrun_two_processes_gloo(data, cache, tmp_path):
    """The same entry point under torchrun: DDP on CPU (gloo), per-rank shards of the data order."""
    run = tmp_path / "ddp"
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        "-m",
        "baselines.train",
        "hgclim",
        "--dataset",
        str(data),
        "--out",
        str(run),
        "--epochs",
        "1",
        "--cache-dir",
        str(cache),
        "--batch-size",
        "16",
        "--workers",
        "0",
        "--log-every",
        "1",
        "--device",
        "cpu",
        "--quiet",
        "--no-tensorboard",
        "--eval-split",
        "validation",
        "--preset",
        "tiny",
    ]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
    )  # its own process group: a hang is killed whole
    try:
        _, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, stderr[-3000:]
    start = [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if r.get("event") == "start"]
    assert start[0]["world_size"] == 2
    train_records = records(run, "train")
    assert [r["step"] for r in train_records] == [1, 2, 3]  # 96 pairs / (16 x 2 ranks)
    ckpt = torch.load(run / "checkpoints" / "latest.pt", weights_only=True)
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2
    assert (run / "MODEL_CARD.md").is_file()


def test_real_cli_on_a_dataset_built_by_the_pipeline(built_dataset, tmp_path):
    """`mipkit train baseline hgclim` / `mipkit eval` on the foundation build (train, resume, eval)."""
    from mipkit.cli.app import app

    dataset, _ = built_dataset
    run = tmp_path / "built_run"
    common = [
        "train",
        "baseline",
        "hgclim",
        "--dataset",
        str(dataset),
        "--out",
        str(run),
        "--preset",
        "tiny",
        "--epochs",
        "2",
        "--batch-size",
        "2",
        "--workers",
        "0",
        "--quiet",
        "--no-tensorboard",
    ]
    runner = CliRunner()
    first = runner.invoke(app, [*common, "--stop-at-step", "1"])
    assert first.exit_code == 0, first.output
    resumed = runner.invoke(app, [*common, "--resume", "latest"])
    assert resumed.exit_code == 0, resumed.output
    assert (run / "MODEL_CARD.md").is_file() and (run / "val_metrics.png").is_file()
    evaluated = runner.invoke(
        app, ["eval", str(run), "--dataset", str(dataset), "--split", "validation", "--json", "--workers", "0"]
    )
    assert evaluated.exit_code == 0, evaluated.output
    out = json.loads(evaluated.stdout)
    assert out["split"] == "validation" and set(out["i2m"]) >= {"mrr", "r@10"} and "emotion" in out


def test_a_diverging_run_stops_with_one_line_instead_of_training_on_nan(data, cache, tmp_path, monkeypatch):
    from baselines.losses import HGCLIMLoss

    real_forward = HGCLIMLoss.forward

    def diverged(self, *args, **kwargs):
        losses = real_forward(self, *args, **kwargs)
        return {**losses, "loss": losses["loss"] * float("nan")}

    monkeypatch.setattr(HGCLIMLoss, "forward", diverged)
    result = CliRunner().invoke(
        train_app,
        [
            "hgclim",
            "--dataset",
            str(data),
            "--out",
            str(tmp_path / "run"),
            "--epochs",
            "1",
            "--cache-dir",
            str(cache),
            *FAST,
        ],
    )
    assert result.exit_code == 2, result.output
    assert "training diverged at step" in result.output and "loss is not finite" in result.output
