"""Assembly straight into save_to_disk-format split files: a killed assembly resumes and keeps finished files."""

from __future__ import annotations

import json

from conftest import small_recipe, write_manifest
from datasets import load_from_disk

from mipkit.kinds.pairs import BuildOptions, build


def _pair_ids(out):
    return sorted(pid for split in load_from_disk(str(out)).values() for pid in split["pair_id"])


def test_a_killed_assembly_resumes_keeping_the_files_it_finished(tmp_path, media_server):
    rows = [{"url": media_server.url(f"src{i}.mp4"), "start_s": "", "emotion": "happy"} for i in range(3)]
    manifest = write_manifest(tmp_path / "m.csv", rows)
    options = {"shards.sources_per_shard": 1, "clip.clips_per_source": 2}
    out = tmp_path / "ds"
    # While an assembly runs, its shards hold their media (put back before any dataset file changes):
    # the state --keep-shard-media keeps after it too. The one-copy kill is in test_shard_media.py.
    build(BuildOptions(manifest=manifest, out=out, recipe=small_recipe(**options), keep_shard_media=True))
    complete = _pair_ids(out)
    files = sorted(out.glob("*/data-*.arrow"))
    assert len(complete) == 6 and files  # one file per shard and split (plus one empty file per empty split)
    assert json.loads((out / "train" / "state.json").read_text())["_data_files"]

    # A kill mid-assembly: the commit files not written yet, one split file missing, one half written.
    record = out / "build" / "assembly.json"
    record.write_text(json.dumps({**json.loads(record.read_text()), "complete": False}))
    (out / "dataset_dict.json").unlink()
    files[0].unlink()
    files[-1].with_name(files[-1].name + ".tmp").write_bytes(b"half")
    kept = {f: f.stat().st_mtime_ns for f in files[1:]}
    build(BuildOptions(manifest=manifest, out=out, recipe=small_recipe(**options), keep_shard_media=True))
    assert _pair_ids(out) == complete
    assert all(f.stat().st_mtime_ns == t for f, t in kept.items())  # finished files are not written again
    assert files[0].is_file() and not list(out.glob("*/*.tmp"))
