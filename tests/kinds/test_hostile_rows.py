"""Adversarial manifest and segment rows (issue 11, items 9, 11, 12).

Every hostile row ends with exactly one status, never a traceback, and never costs the good rows
beside it. Each table row is a case: the cell as a user (or a remote release) could write it, and
the status it must get.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mipkit.config.taxonomy import load_taxonomy
from mipkit.core.errors import MipkitError
from mipkit.core.ids import pair_id_for, source_id_for
from mipkit.kinds.audioset_mood import default_labels_file, read_class_labels, select_segments
from mipkit.kinds.mipnet import read_manifest
from mipkit.kinds.pairs import merged_spellings
from mipkit.pipeline.plan import plan_splits

MOODS = load_taxonomy("audioset_moods")
GOOD = "http://127.0.0.1:8000/media/good.mp4"
VIDEO = "dQw4w9WgXcQ"


def _jsonl(tmp_path: Path, rows: list[dict]) -> Path:
    path = tmp_path / "m.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _csv(tmp_path: Path, rows: list[list[str]], header=("url", "start_s")) -> Path:
    path = tmp_path / "m.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def _accounted(sources, problems) -> int:
    """Rows that ended with a status: one per bad/duplicate row, one per requested window."""
    return len(problems) + sum(len(s.windows) for s in sources)


# --------------------------------------------------------------------------- item 9: time values


@pytest.mark.parametrize("start", [1e306, 1e20, 86400.5, 90000, -1, "-0.5", "nan", "inf", "-inf", "1e309", True, "ten"])
def test_a_time_value_outside_zero_to_24_hours_is_a_bad_row(tmp_path, start):
    sources, problems = read_manifest(
        _jsonl(tmp_path, [{"url": GOOD, "start_s": 1}, {"url": GOOD, "start_s": start}]), MOODS
    )
    assert [len(s.windows) for s in sources] == [1]
    assert [(p.row, p.status) for p in problems] == [(2, "bad_row")]


def test_pair_ids_refuse_times_that_cannot_be_a_window():
    assert pair_id_for("abc", 86400) == "abc_86400000"
    for hostile in (1e306, float("inf"), float("nan"), -1.0):
        with pytest.raises(ValueError):
            pair_id_for("abc", hostile)


_SEGMENT_HEADER = "# YTID, start_seconds, end_seconds, positive_labels\n"


def _segments(tmp_path: Path, lines: list[str], encoding: str = "utf-8") -> Path:
    path = tmp_path / "segments.csv"
    path.write_bytes((_SEGMENT_HEADER + "".join(line + "\n" for line in lines)).encode(encoding))
    return path


@pytest.mark.parametrize(
    "start, end", [("1e306", "1e306"), ("30", "1e306"), ("90000", "90010"), ("0", "inf"), ("nan", "10")]
)
def test_an_audioset_segment_with_an_absurd_time_is_a_bad_row_and_its_neighbours_build(tmp_path, start, end):
    happy = next(c.mid for c in MOODS.classes if c.name == "happy")
    path = _segments(tmp_path, [f'--PJHxphWEs, 30.000, 40.000, "{happy}"', f'--ZhevVpy1s, {start}, {end}, "{happy}"'])
    selection = select_segments([path], read_class_labels(default_labels_file()), MOODS)
    assert [s.source_id for s in selection.sources] == ["--PJHxphWEs"]
    assert [p.status for p in selection.problems] == ["bad_row"]
    assert "line 3" in selection.problems[0].error


@pytest.mark.parametrize("encoding", ["latin-1", "utf-16"])
def test_a_segment_csv_that_is_not_utf8_is_a_one_line_error(tmp_path, encoding):
    happy = next(c.mid for c in MOODS.classes if c.name == "happy")
    path = _segments(tmp_path, [f'--PJHxphWEs, 30.000, 40.000, "{happy}" # café'], encoding=encoding)
    with pytest.raises(MipkitError, match="segments.csv is not UTF-8"):
        select_segments([path], read_class_labels(default_labels_file()), MOODS)


def test_a_labels_csv_that_is_not_utf8_is_a_one_line_error(tmp_path):
    path = tmp_path / "labels.csv"
    path.write_bytes("index,mid,display_name\n276,/m/0zzz,Caf\xe9 music\n".encode("latin-1"))
    with pytest.raises(MipkitError, match="labels.csv is not UTF-8"):
        read_class_labels(path)


# --------------------------------------------------------------------------- item 11: one video, one id

YOUTUBE_SPELLINGS = [
    VIDEO,
    f"https://www.youtube.com/watch?v={VIDEO}",
    f"  https://www.youtube.com/watch?v={VIDEO}\n",
    f"https://youtu.be/{VIDEO}?si=AbCdEf",
    f"https://m.youtube.com/watch?v={VIDEO}&feature=share",
    f"https://youtube.com/watch?feature=youtu.be&v={VIDEO}&t=42s",
    f"https://www.youtube.com/shorts/{VIDEO}",
    f"https://www.youtube.com/embed/{VIDEO}?start=3",
    f"https://www.youtube-nocookie.com/embed/{VIDEO}",
    f"https://music.youtube.com/watch?v={VIDEO}&list=RDAMVM{VIDEO}",
    f"HTTPS://WWW.YOUTUBE.COM/watch?v={VIDEO}",
    f"https://www.youtube.com/v/{VIDEO}",
    f"https://www.youtube.com/live/{VIDEO}",
    f"www.youtube.com/watch?v={VIDEO}",
    f"youtu.be/{VIDEO}",
]

GENERIC_SPELLINGS = [
    "http://127.0.0.1:8000/media/a.mp4",
    "http://127.0.0.1:8000/media/a.mp4\n",
    "http://127.0.0.1:8000/media/\na.mp4",
    "http://127.0.0.1:8000/media/a.mp4?utm_source=newsletter&utm_medium=mail",
    "http://127.0.0.1:8000/media/a.mp4?fbclid=IwAR0",
    "HTTP://127.0.0.1:8000/media/a.mp4",
    "http://127.0.0.1:8000/media/a.mp4#t=30",
    "http://127.0.0.1:8000/media/%61.mp4",
]


@pytest.mark.parametrize("spellings", [YOUTUBE_SPELLINGS, GENERIC_SPELLINGS], ids=["youtube", "generic"])
def test_every_spelling_of_one_video_is_one_source_in_one_split(tmp_path, spellings):
    rows = [{"url": url, "start_s": 10 * i} for i, url in enumerate(spellings)]
    sources, problems = read_manifest(_jsonl(tmp_path, rows), MOODS)
    assert problems == []
    assert len(sources) == 1 and len(sources[0].windows) == len(spellings)
    source = sources[0]
    assert source.spellings == spellings  # the merge is recorded
    assert merged_spellings(sources) == [{"source_id": source.source_id, "url": source.url, "spellings": spellings}]
    assert len(set(plan_splits(sources, {"train": 0.5, "validation": 0.0, "test": 0.5}, seed=0).values())) == 1


def test_a_youtube_spelling_is_fetched_as_its_canonical_watch_url(tmp_path):
    sources, _ = read_manifest(_jsonl(tmp_path, [{"url": f"https://youtu.be/{VIDEO}?list=PL123&si=x"}]), MOODS)
    assert sources[0].url == f"https://www.youtube.com/watch?v={VIDEO}"


@pytest.mark.parametrize(
    "first, second",
    [
        ("http://127.0.0.1:8000/media/a.mp4", "http://127.0.0.1:8000/media/b.mp4"),
        ("http://127.0.0.1:8000/get?file=a.mp4", "http://127.0.0.1:8000/get?file=b.mp4"),
        ("http://127.0.0.1:8000/media/a.mp4", "http://127.0.0.1:8001/media/a.mp4"),
        ("http://127.0.0.1:8000/Media/a.mp4", "http://127.0.0.1:8000/media/a.mp4"),
        ("https://www.youtube.com/watch?v=dQw4w9WgXcQ", "https://www.youtube.com/watch?v=dQw4w9WgXcR"),
    ],
)
def test_urls_that_name_different_media_keep_different_ids(first, second):
    assert source_id_for(first) != source_id_for(second)


def test_default_ports_and_query_order_do_not_change_the_id():
    assert source_id_for("http://example.com:80/a.mp4?b=2&a=1") == source_id_for("http://example.com/a.mp4?a=1&b=2")
    assert source_id_for("https://example.com:443/a.mp4") == source_id_for("https://EXAMPLE.com/a.mp4")


# --------------------------------------------------------------------------- item 12: one status per row


@pytest.mark.parametrize(
    "url, reason",
    [
        ("http://127.0.0.1:8000/a\x00.mp4", "control character"),
        ("http://127.0.0.1:8000/a\x07.mp4", "control character"),
        ("http://127.0.0.1:8000/a\x1b[31m.mp4", "control character"),
        ("http://127.0.0.1:8000/a\x7f.mp4", "control character"),
        ("http://127.0.0.1:8000/a\u0085.mp4", "control character"),
        ("http:///a.mp4", "no host"),
        ("https://", "no host"),
        ("http://:8000/a.mp4", "no host"),
        ("http://user@/a.mp4", "no host"),
        ("http://127.0.0.1:99999/a.mp4", "port"),
        ("http://127.0.0.1:port/a.mp4", "port"),
        ("http://[::1/a.mp4", "not a URL"),
    ],
)
def test_a_url_that_cannot_be_fetched_is_a_bad_row(tmp_path, url, reason):
    sources, problems = read_manifest(_jsonl(tmp_path, [{"url": GOOD}, {"url": url}]), MOODS)
    assert [s.url for s in sources] == [GOOD]
    assert [(p.row, p.status) for p in problems] == [(2, "bad_row")]
    assert reason in problems[0].error
    assert "\x00" not in problems[0].error and "\x1b" not in problems[0].error


def test_a_nul_in_a_csv_cell_is_a_bad_row_not_a_traceback(tmp_path):
    path = tmp_path / "m.csv"
    path.write_bytes(b"url,start_s\n" + GOOD.encode() + b",1\nhttp://127.0.0.1:8000/a\x00.mp4,2\n")
    sources, problems = read_manifest(path, MOODS)
    assert [s.url for s in sources] == [GOOD] and [p.status for p in problems] == ["bad_row"]


@pytest.mark.parametrize(
    "header", [("url", "start_s", "url"), ("url", "start_s", " start_s "), ("url", "emotion", "emotion")]
)
def test_a_duplicate_csv_header_column_is_a_one_line_error(tmp_path, header):
    path = _csv(tmp_path, [[GOOD, "1", "x"]], header=header)
    with pytest.raises(MipkitError, match="column .* appears twice"):
        read_manifest(path, MOODS)


def test_a_duplicate_parquet_column_is_a_one_line_error(tmp_path):
    path = tmp_path / "m.parquet"
    pq.write_table(pa.table([pa.array([GOOD]), pa.array(["x"])], names=["url", "url"]), path)
    with pytest.raises(MipkitError, match="column 'url' appears twice"):
        read_manifest(path, MOODS)


def test_a_jsonl_object_with_a_key_twice_is_a_bad_row(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(f'{{"url": "{GOOD}"}}\n{{"url": "{GOOD}", "start_s": 1, "start_s": 2}}\n')
    _, problems = read_manifest(path, MOODS)
    assert [(p.row, p.status) for p in problems] == [(2, "bad_row")] and "start_s" in problems[0].error


@pytest.mark.parametrize(
    "first, second",
    [
        ({"url": GOOD, "start_s": 5}, {"url": GOOD, "start_s": 5.0}),
        ({"url": GOOD, "start_s": 5}, {"url": GOOD + "?utm_source=x", "start_s": "5"}),
        ({"url": VIDEO, "start_s": 5}, {"url": f"https://youtu.be/{VIDEO}", "start_s": 5.0004}),
        ({"url": VIDEO}, {"url": f"https://www.youtube.com/shorts/{VIDEO}"}),
    ],
)
def test_a_row_that_repeats_another_is_a_duplicate(tmp_path, first, second):
    sources, problems = read_manifest(_jsonl(tmp_path, [first, second]), MOODS)
    assert len(sources) == 1 and len(sources[0].windows) == 1
    assert [(p.row, p.status) for p in problems] == [(2, "duplicate")]


CORPUS = [
    {"url": GOOD, "start_s": 0},
    {"url": GOOD, "start_s": 0},
    {"url": GOOD + "#x", "start_s": 10},
    {"url": "http://127.0.0.1:8000/a\x00.mp4"},
    {"url": "http:///a.mp4"},
    {"url": "ftp://127.0.0.1/a.mp4"},
    {"url": VIDEO, "start_s": 1e306},
    {"url": VIDEO, "start_s": "nan"},
    {"url": f"https://youtu.be/{VIDEO}", "start_s": 20},
    {"url": f"https://youtube.com/watch?v={VIDEO}", "start_s": 20},
    {"url": ""},
    {"url": None},
    {"start_s": 3},
    {"url": VIDEO, "emotion": "meh"},
    {"url": VIDEO, "emotion": "Happy music", "start_s": 30},
    {"url": 42},
    {"url": ["http://127.0.0.1/a.mp4"]},
    {"url": "http://127.0.0.1:8000/b.mp4", "start_s": {"x": 1}},
]


def test_every_row_of_a_hostile_manifest_ends_with_exactly_one_status(tmp_path):
    sources, problems = read_manifest(_jsonl(tmp_path, CORPUS), MOODS)
    assert _accounted(sources, problems) == len(CORPUS)
    rows = sorted([p.row for p in problems] + [w.row for s in sources for w in s.windows])
    assert rows == list(range(1, len(CORPUS) + 1))
    assert {p.status for p in problems} == {"bad_row", "duplicate"}


# --------------------------------------------------------------------------- YouTube-8M inputs


def test_yt8m_inputs_that_are_not_utf8_are_one_line_errors(tmp_path):
    from mipkit.kinds.yt8m.metadata import load_metadata_file
    from mipkit.kinds.yt8m.tfrecords import music_label_index

    metadata = tmp_path / "metadata.jsonl"
    metadata.write_bytes('{"id": "ab12", "youtube_id": "dQw4w9WgXcQ", "title": "Caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(MipkitError, match="metadata.jsonl' is not UTF-8"):
        load_metadata_file(metadata)
    vocabulary = tmp_path / "vocabulary.csv"
    vocabulary.write_bytes(
        "Index,TrainVideoCount,KnowledgeGraphId,Name\n14,1,/m/0mdxd,Music vid\xe9o\n".encode("latin-1")
    )
    with pytest.raises(MipkitError, match="vocabulary.csv' is not UTF-8"):
        music_label_index(vocabulary)


# --------------------------------------------------------------------------- end to end


def test_a_build_merges_spellings_into_one_split_and_records_every_row(tmp_path, media_server):
    from conftest import small_recipe, write_manifest
    from datasets import load_from_disk

    from mipkit.kinds.pairs import MERGED_SOURCES_FILE, BuildOptions, build

    plain0, plain1 = media_server.url("src0.mp4"), media_server.url("src1.mp4")
    rows = [
        {"url": plain0, "start_s": 3.0},
        {"url": plain0 + "?utm_source=mail#t=3", "start_s": 17.25},
        {"url": plain1, "start_s": 0.0},
        {"url": plain1.replace("http://", "HTTP://") + "\n", "start_s": 12.5},
        {"url": plain1, "start_s": 12.5004},  # the same window again: duplicate
        {"url": plain0.replace(".mp4", "\x00.mp4"), "start_s": 0},  # control character: bad_row
        {"url": "http:///src0.mp4", "start_s": 0},  # no host: bad_row
        {"url": plain0, "start_s": 1e306},
    ]  # absurd time: bad_row
    out = tmp_path / "ds"
    recipe = small_recipe(**{"splits.train": 0.5, "splits.validation": 0.0, "splits.test": 0.5})
    summary = build(BuildOptions(manifest=write_manifest(tmp_path / "m.csv", rows), out=out, recipe=recipe))
    assert summary["counts"] == {"ok": 4, "duplicate": 1, "bad_row": 3}
    dataset = load_from_disk(str(out))
    split_of_source = {}
    for split in dataset:
        for source_id in dataset[split]["source_id"]:
            assert split_of_source.setdefault(source_id, split) == split
    assert len(split_of_source) == 2
    merged = [json.loads(line) for line in (out / "build" / MERGED_SOURCES_FILE).read_text().splitlines()]
    assert sorted(len(m["spellings"]) for m in merged) == [2, 2]


# --------------------------------------------------------------------------- releases (hydrate) are untrusted rows too


@pytest.mark.parametrize(
    "url, status",
    [
        ("file:///etc/passwd", "bad_row"),
        ("http:///a.mp4", "bad_row"),
        ("http://127.0.0.1:8000/a\x00.mp4", "bad_row"),
        (GOOD + "?utm_source=x#t=1", "duplicate"),  # the same pair under another spelling
    ],
)
def test_a_release_row_with_a_hostile_url_gets_one_status(url, status):
    from mipkit.release.hydrate import Release, release_reader

    rows = [
        {"source_url": GOOD, "start_s": 5.0},
        {"source_url": url, "start_s": 5.0},
    ]  # no source_id: made from the URL
    sources, problems = release_reader(Release("r", rows, None, []))(MOODS)
    assert [s.url for s in sources] == [GOOD] and len(sources[0].windows) == 1
    assert [(p.row, p.status) for p in problems] == [(2, status)]
