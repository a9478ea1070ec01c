"""One copy of the media (issue 12 item 5): after a complete build the shards keep rows and statuses but no
audio or image bytes; relabels, --retry-failed, a deleted dataset and kills -9 still end with every pair decodable."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from conftest import small_recipe, write_manifest
from datasets import load_from_disk

import mipkit.pipeline.shard
from mipkit.core.records import RATE_LIMITED
from mipkit.kinds.pairs import BuildOptions, build
from mipkit.pipeline.assemble import write_model_labels
from mipkit.pipeline.process import fail_all

RECIPE = {"shards.sources_per_shard": 1, "clip.clips_per_source": 2}
UNLABELLED = "src2.mp4"  # its pairs have no manifest label: a model may label them


def _options(tmp_path, server, out=None, **extra) -> BuildOptions:
    rows = [
        {"url": server.url(f"src{i}.mp4"), "start_s": "", "emotion": "" if f"src{i}.mp4" == UNLABELLED else "happy"}
        for i in range(3)
    ]
    manifest = write_manifest(tmp_path / "m.csv", rows)
    return BuildOptions(manifest=manifest, out=out or tmp_path / "ds", recipe=small_recipe(**RECIPE), **extra)


def _decoded(out) -> dict[str, tuple]:
    """pair_id -> (emotion, emotion_source) of every pair, each audio and image decoded, no pair twice."""
    rows = {}
    for split in load_from_disk(str(out)).values():
        for row in split:
            assert row["audio"].get_all_samples().data.shape[-1] == 320000  # 10 s at 32 kHz
            assert row["image"].size[0] > 0
            assert row["pair_id"] not in rows
            rows[row["pair_id"]] = (row["emotion"], row["emotion_source"])
    return rows


def _shard_tables(out):
    return [pq.read_table(path) for path in sorted(_path(out).glob("build/shards/*/pairs.parquet"))]


def _path(out) -> Path:
    return Path(getattr(out, "local_path", out))


def _no_media_in_shards(out: Path) -> bool:
    tables = _shard_tables(out)
    return bool(tables) and all(t["audio"].null_count == t["image"].null_count == t.num_rows > 0 for t in tables)


def _size(paths) -> int:
    return sum(p.stat().st_size for p in paths if p.is_file())


def test_shards_keep_no_media_and_the_dataset_holds_the_one_copy(tmp_path, media_server, capsys):
    options = _options(tmp_path, media_server)
    build(options)
    out = _path(options.out)
    assert len(_decoded(out)) == 6 and _no_media_in_shards(out)
    statuses = [
        json.loads(line) for p in out.glob("build/shards/*/status.jsonl") for line in p.read_text().splitlines()
    ]
    assert [s["status"] for s in statuses] == ["ok"] * 6  # statuses stay

    kept = _options(tmp_path, media_server, out=tmp_path / "kept", keep_shard_media=True)
    build(kept)
    assert all(t["audio"].null_count == 0 for t in _shard_tables(kept.out))
    arrow = _size(out.glob("*/*.arrow"))
    one, two = _size(out.rglob("*")), _size(_path(kept.out).rglob("*"))
    assert _size(out.glob("build/shards/*/pairs.parquet")) < 0.02 * arrow
    assert one < 1.1 * arrow and two > 1.8 * arrow, (one, two, arrow)

    # The rerun is a no-op: no shard, dataset or media record is written again.
    written = [*out.glob("build/shards/*/*"), *out.glob("*/*.arrow"), *out.glob("*/state.json")]
    stamps = {p: p.stat().st_mtime_ns for p in [*written, out / "build" / "shard_media.json"]}
    capsys.readouterr()
    build(options)
    assert "dataset up to date" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_relabel_then_rebuild_keeps_every_pair_decodable_and_the_labels(tmp_path, media_server):
    from mipkit.labelling.passt import make_labeller
    from mipkit.labelling.relabel import label_dataset

    options = _options(tmp_path, media_server)
    build(options)
    labeller = make_labeller("passt", None, preset="tiny", allow_random_weights=True, device="cpu", seed=0)
    label_dataset(options.out, labeller, threshold=0.0)  # rewrites the dataset: other files, same media
    labelled = _decoded(options.out)
    assert sum(src == labeller.provenance for _, src in labelled.values()) == 2
    (_path(options.out) / "build" / "assembled.json").unlink()  # as a changed recipe would: assemble again
    build(options)
    assert _decoded(options.out) == labelled and _no_media_in_shards(options.out)


def test_retry_failed_keeps_the_old_pairs_and_adds_the_new_one(tmp_path, media_server, monkeypatch):
    real = mipkit.pipeline.shard.build_source

    def rate_limited_once(request, recipe, work, *gate):
        if request.url.endswith("src1.mp4"):
            return [], fail_all(request, RATE_LIMITED, "HTTP Error 429", recipe.clip.clips_per_source)
        return real(request, recipe, work, *gate)

    options = _options(tmp_path, media_server)
    options.recipe = small_recipe(**{**RECIPE, "shards.sources_per_shard": 2})  # src0 and src1 share shard 0
    monkeypatch.setattr(mipkit.pipeline.shard, "build_source", rate_limited_once)
    assert build(options)["counts"] == {"ok": 4, RATE_LIMITED: 2}
    assert len(_decoded(options.out)) == 4 and _no_media_in_shards(options.out)
    monkeypatch.setattr(mipkit.pipeline.shard, "build_source", real)
    options.retry_failed = True
    assert build(options)["counts"] == {"ok": 6}
    assert len(_decoded(options.out)) == 6 and _no_media_in_shards(options.out)


@pytest.mark.parametrize("deleted", ["dataset", "one split"])
def test_a_deleted_dataset_has_its_shards_fetched_again(tmp_path, media_server, capsys, deleted):
    options = _options(tmp_path, media_server)
    build(options)
    complete = _decoded(options.out)
    for split in ["train", "validation", "test"] if deleted == "dataset" else ["train"]:
        shutil.rmtree(_path(options.out) / split)
    (_path(options.out) / "dataset_dict.json").unlink(missing_ok=deleted != "dataset")
    capsys.readouterr()
    build(options)
    assert "gone or incomplete: fetching them again" in " ".join(capsys.readouterr().err.split())
    assert _decoded(options.out) == complete and _no_media_in_shards(options.out)


_KILLED = """
import os, sys
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from conftest import small_recipe
import mipkit.pipeline.assemble as assemble
import mipkit.pipeline.shard_media as shard_media
from mipkit.kinds.pairs import BuildOptions, build

where, after = sys.argv[4], int(sys.argv[5])
module, name = (assemble, "_write_arrow") if where == "assembly" else (shard_media, "write_parquet")
real, calls = getattr(module, name), [0]
def write_then_die(*args, **kwargs):
    real(*args, **kwargs)
    calls[0] += 1
    if calls[0] == after:
        os.kill(os.getpid(), 9)
setattr(module, name, write_then_die)
build(BuildOptions(manifest=Path(sys.argv[2]), out=sys.argv[3], recipe=small_recipe(**{RECIPE})))
"""


def _killed_build(options: BuildOptions, where: str, after: int) -> None:
    script = _KILLED.replace("{RECIPE}", repr(RECIPE))
    tests = str(Path(__file__).resolve().parents[1])
    args = [tests, str(options.manifest), str(options.out), where, str(after)]
    killed = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=600)
    assert killed.returncode == -9, killed.stderr[-2000:]


def test_a_kill_while_dropping_the_media_is_finished_by_the_rerun(tmp_path, media_server):
    options = _options(tmp_path, media_server)
    _killed_build(options, "drop", after=1)  # one of three shards rewritten without its media
    tables = _shard_tables(options.out)
    assert sorted(t["audio"].null_count for t in tables) == [0, 0, 2]
    build(options)
    assert len(_decoded(options.out)) == 6 and _no_media_in_shards(options.out)


@pytest.mark.parametrize("where", ["restore", "assembly"])
def test_a_kill_while_reassembling_a_one_copy_build_is_finished_by_the_rerun(tmp_path, media_server, where):
    options = _options(tmp_path, media_server)
    build(options)
    before = _decoded(options.out)
    relabel = sorted(pid for pid, (_, source) in before.items() if source is None)
    assert len(relabel) == 2
    labels = [
        {"pair_id": relabel[0], "emotion": "sad", "emotion_score": 0.9, "emotion_source": "passt", "dropped": False}
    ]
    write_model_labels(options.out / "build", labels)
    _killed_build(options, where, after=1)
    build(options)
    after = _decoded(options.out)
    assert after.keys() == before.keys() and after[relabel[0]][1] == "passt"
    assert _no_media_in_shards(options.out)


def test_keep_shard_media_flag_keeps_both_copies(tmp_path, media_server):
    options = _options(tmp_path, media_server)
    out = tmp_path / "kept"
    args = ["build", "mipnet", "--manifest", str(options.manifest), "--out", str(out), "--keep-shard-media"]
    args += ["--shard-size", "1", "--clips-per-source", "1"]
    result = subprocess.run([sys.executable, "-m", "mipkit", *args], capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    tables = _shard_tables(out)
    assert len(tables) == 3 and all(t["audio"].null_count == 0 and t.num_rows == 1 for t in tables)
    assert not (out / "build" / "shard_media.json").exists()


def test_the_same_plan_assembled_again_drops_the_media_again(tmp_path, media_server):
    options = _options(tmp_path, media_server)
    build(options)
    for record in ("assembled.json", "assembly.json"):  # what benchmarks/noop_rerun.py does to force it
        (_path(options.out) / "build" / record).unlink()
    build(options)
    assert len(_decoded(options.out)) == 6 and _no_media_in_shards(options.out)


def test_pairs_whose_media_the_dataset_lost_are_fetched_again(tmp_path, media_server):
    from mipkit.core.errors import MipkitError

    options = _options(tmp_path, media_server)
    build(options)
    complete = _decoded(options.out)
    unlabelled = sorted(pid for pid, (_, source) in complete.items() if source is None)
    # `mipkit label --drop` removed these pairs from the dataset; a later overlay no longer drops them.
    drop = [
        {"pair_id": p, "emotion": None, "emotion_score": None, "emotion_source": "m", "dropped": True}
        for p in unlabelled
    ]
    write_model_labels(options.out / "build", drop)
    build(options)
    assert _decoded(options.out).keys() == complete.keys() - set(unlabelled)
    (_path(options.out) / "build" / "model_labels.parquet").unlink()
    with pytest.raises(MipkitError, match="lacks the audio of 1 shard.*run the same command again"):
        build(options)
    build(options)
    assert _decoded(options.out).keys() == complete.keys() and _no_media_in_shards(options.out)
