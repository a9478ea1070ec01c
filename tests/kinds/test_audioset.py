"""AudioSet segment CSVs -> mood requests, and `mipkit build audioset-mood` end to end on 127.0.0.1."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from mipkit.config.taxonomy import load_taxonomy
from mipkit.core.errors import MipkitError
from mipkit.demo.mediaserver import MediaServer
from mipkit.demo.synthetic_media import make_video, spec_for_index
from mipkit.kinds.audioset_mood import (
    SELECTION_FILE,
    default_labels_file,
    fetch_csv,
    read_class_labels,
    select_segments,
)

runner = CliRunner()
MOODS = load_taxonomy("audioset_moods")
MID = {c.name: c.mid for c in MOODS.classes}
MUSIC, SPEECH = "/m/04rlf", "/m/09x0r"
EXPECTED_SOURCE = "audioset"

SEGMENTS = f"""# Segments csv created Sun Mar  5 10:54:31 2017
# num_ytids=9, num_segs=9, num_unique_labels=527, num_positive_labels=20
# YTID, start_seconds, end_seconds, positive_labels
--PJHxphWEs, 30.000, 40.000, "{MUSIC},{MID["happy"]}"
--ZhevVpy1s, 50.000, 60.000, "{MID["sad"]}"
--aE2O5G5WE, 0.000, 10.000, "{MUSIC},{MID["scary"]},{MID["angry"]}"
--aO5cdqSAg, 30.000, 40.000, "{SPEECH},{MUSIC}"

--PJHxphWEs, 30.000, 40.000, "{MID["happy"]}"
bad id!, 1.000, 11.000, "{MID["happy"]}"
--cB2ZVjpnA, ten, 40.000, "{MID["happy"]}"
--cB2ZVjpnB, 40.000, 30.000, "{MID["happy"]}"
--cB2ZVjpnC, 30.000
--dA4fhSE3c, 0.000, 10.000, "/m/0zzzzz,{MID["tender"]}"
--eB5gi_F4d, 0.000, 10.000, "happy music"
--fC6hjG05e, 20.000, 30.000, {MID["funny"]},{MUSIC}
"""


def _labels(tmp_path: Path, extra: str = "") -> Path:
    path = tmp_path / "class_labels_indices.csv"
    path.write_text(
        f'index,mid,display_name\n0,{SPEECH},"Speech"\n137,{MUSIC},"Music"\n'
        + default_labels_file().read_text().split("\n", 1)[1]
        + extra
    )
    return path


def _select(tmp_path, labels_path=None, **kwargs):
    csv_path = tmp_path / "segments.csv"
    csv_path.write_text(SEGMENTS)
    labels = read_class_labels(labels_path or default_labels_file())
    return select_segments([csv_path], labels, MOODS, **kwargs)


def test_shipped_labels_agree_with_the_taxonomy_and_audioset_indices():
    labels = read_class_labels(default_labels_file())
    assert [(labels[c.mid].index, labels[c.mid].display_name) for c in MOODS.classes] == [
        (276 + i, f"{c.name.capitalize()} music") for i, c in enumerate(MOODS.classes)
    ]


def test_one_mood_segments_are_kept_with_quoting_comments_and_spaces(tmp_path):
    selection = _select(tmp_path, _labels(tmp_path))
    kept = {(w.row, s.source_id, w.start_s, w.emotion) for s in selection.sources for w in s.windows}
    assert kept == {
        (4, "--PJHxphWEs", 30.0, "happy"),
        (5, "--ZhevVpy1s", 50.0, "sad"),
        (16, "--fC6hjG05e", 20.0, "funny"),
    }
    assert all(s.url == f"https://www.youtube.com/watch?v={s.source_id}" for s in selection.sources)
    counts = selection.counts
    assert (counts["rows"], counts["kept"], counts["multi_mood_skipped"], counts["no_mood"], counts["duplicate"]) == (
        12,
        3,
        1,
        1,
        1,
    )


def test_malformed_rows_and_unknown_mids_are_bad_rows_with_reasons(tmp_path):
    selection = _select(tmp_path, _labels(tmp_path))
    problems = {p.row: (p.status, p.error) for p in selection.problems}
    assert problems[9][0] == "duplicate" and problems[9][1].startswith("segments.csv line 9")
    reasons = {row: error.split(": ", 1)[1] for row, (status, error) in problems.items() if status == "bad_row"}
    assert reasons == {
        10: "YTID 'bad id!' is not a YouTube id",
        11: "start_seconds 'ten' is not a number",
        12: "segment 40.000-30.000 s must have 0 <= start < end",
        13: "expected 'YTID, start_seconds, end_seconds, \"mid,...\"', got 2 fields",
        14: "unknown label mid '/m/0zzzzz' (not in the --labels file)",
        15: "label 'happy music' is not an AudioSet mid",
    }


def test_the_seven_row_default_cannot_tell_unknown_mids_from_other_classes(tmp_path):
    selection = _select(tmp_path)
    kept = {s.source_id: [w.emotion for w in s.windows] for s in selection.sources}
    assert kept["--dA4fhSE3c"] == ["tender"]  # /m/0zzzzz is simply not a mood here
    assert not any("unknown label mid" in p.error for p in selection.problems)


def test_keep_multi_mood_takes_the_first_mood_and_url_template_maps_ids(tmp_path):
    selection = _select(
        tmp_path, _labels(tmp_path), keep_multi_mood=True, url_template="http://mirror.example/{id}.mp4"
    )
    kept = {s.source_id: (s.url, [w.emotion for w in s.windows]) for s in selection.sources}
    assert kept["--aE2O5G5WE"] == ("http://mirror.example/--aE2O5G5WE.mp4", ["scary"])
    assert selection.counts["multi_mood_kept"] == 1
    with pytest.raises(MipkitError, match="has no '\\{id\\}'"):
        _select(tmp_path, url_template="http://mirror.example/video.mp4")


def test_class_labels_files_in_other_spellings_and_contradicting_ones(tmp_path):
    plain = tmp_path / "plain.csv"  # no header, unquoted, underscores (as some copies ship it)
    plain.write_text("".join(f"{c.audioset_index},{c.mid},{c.display_name.replace(' ', '_')}\n" for c in MOODS.classes))
    assert read_class_labels(plain)[MID["sad"]].display_name == "Sad_music"
    _select(tmp_path, plain)
    wrong = tmp_path / "wrong.csv"
    wrong.write_text(plain.read_text().replace("276,/t/dd00031", "275,/t/dd00031"))
    with pytest.raises(MipkitError, match="says /t/dd00031 is 275"):
        _select(tmp_path, wrong)
    partial = tmp_path / "partial.csv"
    partial.write_text("\n".join(plain.read_text().splitlines()[:-1]) + "\n")
    with pytest.raises(MipkitError, match="lacks /t/dd00037"):
        _select(tmp_path, partial)


def test_segment_csvs_are_fetched_from_urls_once(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    (served / "eval_segments.csv").write_text(SEGMENTS)
    with MediaServer(served) as server:
        first = fetch_csv(server.url("eval_segments.csv"), cache=tmp_path / "cache")
        with pytest.raises(MipkitError, match="could not download --segments .*missing.csv"):
            fetch_csv(server.url("missing.csv"), cache=tmp_path / "cache")
        url = server.url("eval_segments.csv")
    assert first.read_text() == SEGMENTS and first.name.startswith("eval_segments-")
    assert fetch_csv(url, cache=tmp_path / "cache") == first  # server gone: the cached copy serves
    with pytest.raises(MipkitError, match="does not exist"):
        fetch_csv(str(tmp_path / "nope.csv"))


# ---------------------------------------------------------------------------- end to end
E2E = [  # (YTID, start, mood): two moods, four sources each -> stratified 2/1/1 per mood
    ("happyAAAA01", 2.0, "happy"),
    ("happyAAAA02", 1.5, "happy"),
    ("happyAAAA03", 0.0, "happy"),
    ("happyAAAA04", 3.0, "happy"),
    ("sadBBBBBB01", 1.0, "sad"),
    ("sadBBBBBB02", 2.5, "sad"),
    ("sadBBBBBB03", 0.0, "sad"),
    ("sadBBBBBB04", 2.0, "sad"),
]


def test_build_audioset_mood_end_to_end(tmp_path):
    from datasets import load_from_disk

    from mipkit.cli.app import app

    media = tmp_path / "media"
    for index, (ytid, _, _) in enumerate(E2E):
        make_video(media / f"{ytid}.mp4", spec_for_index(index, 14.0), size="64x48", fps=5)
    csv_path = tmp_path / "balanced_train_segments.csv"
    rows = [f'{ytid}, {start:.3f}, {start + 10:.3f}, "{MUSIC},{MID[mood]}"' for ytid, start, mood in E2E]
    rows += [f'missingVid1, 0.000, 10.000, "{MID["angry"]}"', f'notAmood001, 0.000, 10.000, "{SPEECH}"', "broken, row"]
    csv_path.write_text("# YTID, start_seconds, end_seconds, positive_labels\n" + "\n".join(rows) + "\n")
    out = tmp_path / "out"
    with MediaServer(media) as server:
        args = [
            "build",
            "audioset-mood",
            "--segments",
            str(csv_path),
            "--out",
            str(out),
            "--workers",
            "1",
            "--url-template",
            f"{server.base_url}/{{id}}.mp4",
            "--shard-size",
            "3",
            "--fetch-threads",
            "3",
        ]
        result = runner.invoke(app, args)
    assert result.exit_code == 0, (result.output, result.exception)

    dataset = load_from_disk(str(out))
    assert "image" not in dataset["train"].column_names
    names = dataset["train"].features["emotion"].names
    wanted = {f"{ytid}_{int(start * 1000):08d}": mood for ytid, start, mood in E2E}
    got = {}
    for split in dataset:
        table = dataset[split].data
        for pair_id, emotion, source in zip(
            *(table.column(c).to_pylist() for c in ("pair_id", "emotion", "emotion_source"))
        ):
            got[pair_id] = (split, names[emotion])
            assert source == EXPECTED_SOURCE
    assert {k: v[1] for k, v in got.items()} == wanted
    for mood in ("happy", "sad"):  # stratified: every mood is split 2/1/1 by source
        per_split = [
            sum(1 for s, m in got.values() if s == split and m == mood) for split in ("train", "validation", "test")
        ]
        assert per_split == [2, 1, 1], (mood, per_split)

    status = runner.invoke(app, ["status", str(out), "--json"])
    report = json.loads(status.output)
    assert report["counts"] == {"bad_row": 1, "ok": 8, "unavailable": 1}
    failed = {f["status"]: f for f in report["failed"]}
    assert failed["unavailable"]["pair_id"] == "missingVid1_00000000"
    assert "balanced_train_segments.csv line 12" in failed["bad_row"]["error"]
    assert (out / SELECTION_FILE).read_text().count("\n") == 1 + 9  # header + the nine mood segments

    # Resume from another mirror: ids are YTIDs, so nothing is refetched and nothing mixes.
    again = runner.invoke(app, args[:-6] + ["--url-template", "http://127.0.0.1:9/{id}.mp4", "--shard-size", "3"])
    assert again.exit_code == 0, (again.output, again.exception)
    assert "resuming: 3 of 3 shards already done" in again.output
