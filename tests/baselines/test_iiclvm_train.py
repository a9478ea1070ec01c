"""End-to-end II-CLVM / CLVM / II-CLVTM training and evaluation through the real `mipkit` CLI (tiny, CPU)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from mipkit.cli.app import app
from mipkit.demo.mediaserver import MediaServer
from tests.helpers.yt8m_fixtures import write_release, write_site
from tests.helpers.yt8m_synthetic import make_yt8m_dataset

REPO = Path(__file__).resolve().parents[2]
FAST = ["--preset", "tiny", "--batch-size", "16", "--log-every", "1", "--device", "cpu", "--quiet", "--no-tensorboard"]
INSTANCE = {"r@1", "r@5", "r@10", "mrr", "median_rank"}


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("yt8m") / "synth"
    make_yt8m_dataset(out, n_train=48, n_val=16, n_test=16, seed=0)  # 3 steps per epoch at batch 16
    return out


def cli(*args: str):
    result = CliRunner().invoke(app, list(args))
    if result.exception and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def train(kind: str, *args: str):
    return cli("train", "baseline", kind, *args)


def records(run: Path, kind: str) -> list[dict]:
    return [r for r in map(json.loads, (run / "log.jsonl").read_text().splitlines()) if r["kind"] == kind]


@pytest.fixture(scope="module")
def run_a(synth, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("runs") / "run_a"
    result = train("iiclvm", "--dataset", str(synth), "--out", str(run), "--epochs", "2", *FAST)
    assert result.exit_code == 0, result.output
    return run


def test_train_writes_logs_plots_card_and_checkpoint(run_a, synth):
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
    steps = records(run_a, "train")
    assert [r["step"] for r in steps] == list(range(1, 7))
    for key in ("loss", "loss/inter", "loss/intra_v", "loss/intra_m", "temperature", "samples_per_s", "data_time"):
        assert all(key in r for r in steps), key
    val = records(run_a, "val")
    assert [r["epoch"] for r in val] == [0, 1, 2] and {"v2m/mrr", "v2m/r@10", "m2v/mrr"} <= set(val[-1])
    assert (val[-1]["v2m/mrr"] + val[-1]["m2v/mrr"]) > (val[0]["v2m/mrr"] + val[0]["m2v/mrr"])  # it learns
    config = json.loads((run_a / "config.json").read_text())
    assert (
        config["task"] == "iiclvm" and config["w_intra"] == 3.0 and config["hidden"] == 32 and config["segments"] == 30
    )
    ckpt = torch.load(run_a / "checkpoints" / "latest.pt", weights_only=True)
    assert (ckpt["step"], ckpt["epoch"]) == (6, 2) and any(k.startswith("video_encoder.lstm") for k in ckpt["model"])
    card = (run_a / "MODEL_CARD.md").read_text()
    assert "# II-CLVM (bilstm, GS)" in card and "`--w-intra`" in card and "From 1024 candidates" in card
    assert str(synth.parent) not in card and str(synth.parent) not in (run_a / "log.jsonl").read_text()


def test_eval_json_reports_both_directions_and_both_pool_sizes(run_a, synth):
    result = cli("eval", str(run_a), "--dataset", str(synth), "--split", "test", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["split"] == "test" and out["n_pairs"] == 16 and out["model"] == "II-CLVM"
    for direction in ("v2m", "m2v"):
        assert INSTANCE <= set(out[direction])
        for pool in ("1000", "1024"):
            assert INSTANCE <= set(out["pools"][pool][direction]["mean"]) <= set(out["pools"][pool][direction]["std"])
            assert out["pools"][pool][direction]["seeds"] == [0, 1, 2]
    final = json.loads((run_a / "eval_test.json").read_text())  # the training run's own final evaluation
    assert out["v2m"]["mrr"] == pytest.approx(final["v2m"]["mrr"], abs=1e-6)
    table = cli("eval", str(run_a), "--dataset", str(synth), "--candidates", "8")
    assert table.exit_code == 0 and "video→music" in table.stdout and "from 8" in table.stdout


def test_resume_continues_at_the_saved_step_with_identical_weights(run_a, synth, tmp_path):
    run_b = tmp_path / "run_b"
    common = ["--dataset", str(synth), "--out", str(run_b), "--epochs", "2", *FAST]
    assert train("iiclvm", *common, "--stop-at-step", "4").exit_code == 0  # mid-epoch
    stopped = torch.load(run_b / "checkpoints" / "latest.pt", weights_only=True)
    assert (stopped["step"], stopped["epoch"], stopped["step_in_epoch"]) == (4, 1, 1)
    assert train("iiclvm", *common).exit_code == 2  # never overwrite a run silently
    assert train("iiclvm", *common, "--resume", "latest").exit_code == 0
    a = torch.load(run_a / "checkpoints" / "latest.pt", weights_only=True)
    b = torch.load(run_b / "checkpoints" / "latest.pt", weights_only=True)
    assert b["step"] == a["step"] == 6
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key  # same frames sampled: the RNG state is restored


def test_clvm_is_iiclvm_with_w_intra_0(synth, tmp_path):
    common = ["--dataset", str(synth), "--epochs", "1", "--stop-at-step", "1", *FAST]
    assert train("clvm", *common, "--out", str(tmp_path / "clvm")).exit_code == 0
    assert train("iiclvm", *common, "--w-intra", "0", "--out", str(tmp_path / "ii0")).exit_code == 0
    configs = [json.loads((tmp_path / name / "config.json").read_text()) for name in ("clvm", "ii0")]
    assert configs[0].pop("out") != configs[1].pop("out") and configs[0] == configs[1]
    assert configs[0]["w_intra"] == 0.0
    first = [records(tmp_path / name, "train")[0] for name in ("clvm", "ii0")]
    assert first[0]["loss"] == first[1]["loss"] == first[0]["loss/inter"]


@pytest.mark.parametrize(
    "kind, args, flag",
    [
        ("clvm", ["--w-intra", "3"], "--w-intra"),
        ("iiclvm", ["--text", "title"], "--text"),
        ("iiclvtm", [], "--text"),
        ("iiclvtm", ["--text", "title", "--preset", "full"], "--text-weights"),
        ("iiclvm", ["--encoder", "rnn"], "--encoder"),
        ("iiclvm", ["--sampling", "dense"], "--sampling"),
    ],
)
def test_input_errors_are_one_line(synth, tmp_path, kind, args, flag):
    result = train(kind, "--dataset", str(synth), "--out", str(tmp_path / "run"), *FAST, *args)
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and flag in lines[0], result.output
    assert not (tmp_path / "run").exists()


@pytest.fixture(scope="module")
def built_title(tmp_path_factory) -> Path:
    """`mipkit build yt8m-title` on the YouTube-8M test release (lookup and pages from 127.0.0.1)."""
    root = tmp_path_factory.mktemp("yt8m_release")
    paths = write_release(root / "release")
    site = root / "site"
    site.mkdir()
    out = root / "title"
    with MediaServer(site) as server:
        write_site(site, server.base_url)
        result = cli(
            "build",
            "yt8m-title",
            "--tfrecords",
            str(paths["frames"]),
            "--out",
            str(out),
            "--vocabulary",
            str(paths["vocabulary"]),
            "--lookup-base",
            server.url("lookup"),
            "--video-url-template",
            server.url("videos/{youtube_id}.html"),
            "--cache-dir",
            str(root / "cache"),
            "--metadata",
            str(paths["metadata"]),
        )
    assert result.exit_code == 0, result.output
    return out


@pytest.mark.parametrize(
    "kind, extra", [("iiclvm", []), ("iiclvtm", ["--text", "title", "--encoder", "gcn", "--sampling", "fd"])]
)
def test_real_cli_on_a_built_yt8m_title_dataset(built_title, tmp_path, kind, extra):
    """train (3 videos of 2-7 s, shorter than K: frames repeat; no validation split) then `mipkit eval --json`."""
    run = tmp_path / kind
    result = train(kind, "--dataset", str(built_title), "--out", str(run), "--epochs", "2", *FAST, *extra)
    assert result.exit_code == 0, result.output
    assert (run / "MODEL_CARD.md").is_file() and (run / "val_metrics.png").is_file()
    card = (run / "MODEL_CARD.md").read_text()
    assert "no model selection" in card  # validation curves on the test split, said so
    if kind == "iiclvtm":
        assert "II-CLVTM" in card and "hashed-ngram" in card and (run / "cache" / "text-title-train.pt").is_file()
    evaluated = cli("eval", str(run), "--dataset", str(built_title), "--split", "test", "--json")
    assert evaluated.exit_code == 0, evaluated.output
    out = json.loads(evaluated.stdout)
    assert out["n_pairs"] == 1 and INSTANCE <= set(out["v2m"]) and set(out["pools"]) == {"1000", "1024"}
    assert out["pools"]["1000"]["v2m"]["used_all_pairs"]


def test_torchrun_two_processes_gloo(synth, tmp_path):
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
        "iiclvm",
        "--dataset",
        str(synth),
        "--out",
        str(run),
        "--epochs",
        "1",
        "--eval-split",
        "validation",
        *FAST,
    ]
    cmd[cmd.index("--batch-size") + 1] = "8"
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
    assert [r["step"] for r in records(run, "train")] == [1, 2, 3]  # 48 pairs / (8 x 2 ranks)
    ckpt = torch.load(run / "checkpoints" / "latest.pt", weights_only=True)
    assert ckpt["world_size"] == 2 and len(ckpt["rng"]) == 2 and (run / "MODEL_CARD.md").is_file()
