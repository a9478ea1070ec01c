"""`mipkit search`: new images find their music (and clips their images) through a cached FAISS index."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from baselines.eval.search import flat_index, normalised, search_run
from mipkit.cli.search import music_window
from tests.helpers.synthetic import make_scene_dataset
from tests.helpers.yt8m_synthetic import make_yt8m_dataset


@pytest.fixture(scope="module")
def scenes(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("scenes") / "scenes"
    make_scene_dataset(out, n_train=24, n_val=4, n_test=4)
    return out


@pytest.fixture(scope="module")
def run(scenes, tmp_path_factory) -> Path:
    from baselines.train import TrainConfig, main

    out = tmp_path_factory.mktemp("run") / "hgclim"
    main(
        TrainConfig(
            dataset=str(scenes),
            out=str(out),
            preset="tiny",
            epochs=40,
            batch_size=8,
            workers=0,
            quiet=True,
            tensorboard=False,
            device="cpu",
        )
    )
    return out


def query_files(scenes: Path, folder: Path, split: str = "test") -> list[tuple[str, Path, Path]]:
    """(pair_id, image file, clip file) of every pair of a split, written as a user would have them."""
    import datasets

    ds = datasets.load_from_disk(str(scenes))[split]
    ds = ds.cast_column("image", datasets.Image(decode=False)).cast_column("audio", datasets.Audio(decode=False))
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for row in ds:
        image, clip = folder / f"{row['pair_id']}.jpg", folder / f"{row['pair_id']}.flac"
        image.write_bytes(row["image"]["bytes"])
        clip.write_bytes(row["audio"]["bytes"])
        out.append((row["pair_id"], image, clip))
    return out


def test_images_find_their_own_music_at_rank_1_for_most_queries(scenes, run, tmp_path):
    # The library is the run's dataset (32 pairs); the queries are the images and clips the model learned
    # to pair, read from files as a user would pass them: the search path must reproduce what training learnt.
    queries = query_files(scenes, tmp_path, "train")
    logs: list[str] = []
    top1 = [
        search_run(run, image=image, k=5, device="cpu", log=logs.append)["results"][0]["pair_id"] == pair_id
        for pair_id, image, _ in queries
    ]
    assert sum(top1) > len(top1) / 2, f"true pair at rank 1 for {sum(top1)} of {len(top1)} images"
    assert sum("building" in line for line in logs if "search index" in line) == 1  # indexed once, then reused
    clips = [
        search_run(run, music=music_window(clip, None), k=5, device="cpu", log=logs.append)["results"][0]["pair_id"]
        == pair_id
        for pair_id, _, clip in queries
    ]
    assert sum(clips) > len(clips) / 2, f"true pair at rank 1 for {sum(clips)} of {len(clips)} clips"


def test_faiss_ranking_equals_brute_force_cosine():
    rng = np.random.default_rng(0)
    library, queries = rng.normal(size=(500, 32)).astype(np.float32), rng.normal(size=(7, 32)).astype(np.float32)
    scores, ids = flat_index(library * 3.0).search(normalised(queries), 10)  # scale must not matter: cosine
    cosine = (
        torch.nn.functional.normalize(torch.from_numpy(queries), dim=1)
        @ torch.nn.functional.normalize(torch.from_numpy(library), dim=1).T
    )
    top = torch.topk(cosine, 10)
    assert ids.tolist() == top.indices.tolist()
    np.testing.assert_allclose(scores, top.values.numpy(), atol=1e-5)


def test_the_index_is_rebuilt_when_the_checkpoint_changes(scenes, run, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("search"))  # an index of its own
    image = query_files(scenes, tmp_path / "q")[0][1]
    logs: list[str] = []
    first = search_run(copy, image=image, k=3, device="cpu", log=logs.append)
    search_run(copy, image=image, k=3, device="cpu", log=logs.append)
    state = torch.load(copy / "checkpoints" / "latest.pt", weights_only=False)
    name = next(k for k in state["model"] if k.startswith("music_proj.") and k.endswith("weight"))
    state["model"][name] = state["model"][name] * 0.5 + 0.01
    torch.save(state, copy / "checkpoints" / "latest.pt")
    search_run(copy, image=image, k=3, device="cpu", log=logs.append)
    index_lines = [line for line in logs if "search index" in line]
    assert "building" in index_lines[0] and "up to date" in index_lines[1]
    assert "stale (changed: checkpoint)" in index_lines[2]
    assert [r["rank"] for r in first["results"]] == [1, 2, 3]
    assert first["results"][0]["score"] >= first["results"][1]["score"] >= first["results"][2]["score"]


def test_cli_prints_json_with_pair_id_score_source_url_and_start(scenes, run, tmp_path):
    pair_id, _, clip = query_files(scenes, tmp_path)[0]
    cmd = [
        sys.executable,
        "-m",
        "mipkit",
        "search",
        str(run),
        "--music",
        str(clip),
        "--start",
        "0",
        "-k",
        "3",
        "--json",
        "--device",
        "cpu",
    ]
    out = json.loads(subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=300).stdout)
    assert out["searched"] == "image" and len(out["results"]) == 3
    assert set(out["results"][0]) >= {"pair_id", "score", "source_url", "start_s"}
    assert out["results"][0]["source_url"].startswith("http://127.0.0.1/")
    table = subprocess.run(cmd[:-3] + ["--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert table.returncode == 0 and "pair_id" in table.stdout and "score" in table.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        ([], "pass exactly one query"),
        (["--image", "missing.jpg"], "--image: file 'missing.jpg' not found"),
        (["--video-features", "{clip}"], "this is an HG-CLIM run"),
    ],
)
def test_bad_queries_fail_in_one_line(scenes, run, tmp_path, args, message):
    clip = query_files(scenes, tmp_path)[0][2]
    args = [a.format(clip=clip) for a in args]
    result = subprocess.run(
        [sys.executable, "-m", "mipkit", "search", str(run), *args], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_iiclvm_runs_search_music_for_video_features(tmp_path):
    from baselines.cli.app import run_train_app  # noqa: F401 - registers the sequence models' commands
    from baselines.tasks.iiclvm import IICLVMConfig
    from baselines.train import main

    data = tmp_path / "yt8m"
    dd = make_yt8m_dataset(data, n_train=32, n_val=8, n_test=8)
    run = tmp_path / "iiclvm"
    main(
        IICLVMConfig(
            dataset=str(data),
            out=str(run),
            preset="tiny",
            epochs=2,
            batch_size=16,
            workers=0,
            quiet=True,
            tensorboard=False,
            device="cpu",
            eval_candidates=(8,),
        )
    )
    features = tmp_path / "video.npy"
    np.save(features, np.asarray(dd["test"][0]["rgb"], dtype=np.uint8))
    result = search_run(run, video_features=features, k=4, device="cpu", log=lambda _msg: None)
    assert result["searched"] == "music" and [r["rank"] for r in result["results"]] == [1, 2, 3, 4]
    assert set(result["results"][0]) >= {"video_id", "youtube_id", "title", "score"}
    scores = [r["score"] for r in result["results"]]
    assert scores == sorted(scores, reverse=True)
