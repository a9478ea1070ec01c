"""Unit tests of the build stages that need no network: ids, manifest, windows, splits, recipe."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mipkit.config.recipe import load_recipe
from mipkit.config.taxonomy import load_taxonomy
from mipkit.core import records
from mipkit.core.errors import MipkitError
from mipkit.core.ids import pair_id_for, sanitize_id, source_id_for, youtube_id
from mipkit.core.records import SourceRequest, Window
from mipkit.kinds.mipnet import read_manifest
from mipkit.pipeline.fetch import classify_error, one_line
from mipkit.pipeline.plan import assign_splits
from mipkit.pipeline.process import plan_windows, resolve_windows

MOODS = load_taxonomy("audioset_moods")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("dQw4w9WgXcQ", "dQw4w9WgXcQ"),
        ("https://www.youtube.com/watch?v=dQw4w9WgXcQ&t=10", "dQw4w9WgXcQ"),
        ("https://youtu.be/dQw4w9WgXcQ", "dQw4w9WgXcQ"),
        ("https://www.youtube.com/shorts/dQw4w9WgXcQ", "dQw4w9WgXcQ"),
        ("https://example.com/watch?v=dQw4w9WgXcQ", None),
        ("http://127.0.0.1:8000/a.mp4", None),
    ],
)
def test_youtube_ids(text, expected):
    assert youtube_id(text) == expected


def test_source_ids_are_path_safe_and_distinct():
    hostile = "http://evil.example/../../etc/passwd%00;rm -rf ~.mp4"
    sid = source_id_for(hostile)
    assert sid == sanitize_id(sid) and "/" not in sid and ".." not in sid
    assert source_id_for("http://a/x/clip.mp4") != source_id_for("http://b/x/clip.mp4")
    assert source_id_for("https://youtu.be/dQw4w9WgXcQ") == "dQw4w9WgXcQ"
    assert sanitize_id("..") == "x" and sanitize_id("") == "x"
    assert pair_id_for("abc", 12.3456) == "abc_00012346"


def test_manifest_formats_agree(tmp_path):
    rows = [
        {"url": "dQw4w9WgXcQ", "start_s": 5.0, "emotion": "Happy music", "title": "t", "license": "cc"},
        {"url": "https://youtu.be/dQw4w9WgXcQ", "start_s": 20.0, "emotion": "sad", "title": None, "license": None},
        {"url": "http://h/v.mp4", "start_s": None, "emotion": None, "title": None, "license": None},
    ]
    (tmp_path / "m.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "m.parquet")
    (tmp_path / "m.csv").write_text(
        "url,start_s,emotion,title,license\n"
        + "\n".join(
            ",".join("" if r[k] is None else str(r[k]) for k in ("url", "start_s", "emotion", "title", "license"))
            for r in rows
        )
    )
    results = [read_manifest(tmp_path / f"m.{ext}", MOODS) for ext in ("csv", "jsonl", "parquet")]
    for sources, problems in results:
        assert problems == []
        assert [s.source_id for s in sources] == ["dQw4w9WgXcQ", source_id_for("http://h/v.mp4")]
        assert [(w.start_s, w.emotion) for w in sources[0].windows] == [(5.0, "happy"), (20.0, "sad")]
        assert sources[0].url == "https://www.youtube.com/watch?v=dQw4w9WgXcQ"
        assert sources[1].windows[0].start_s is None


def test_bad_rows_are_recorded_not_raised(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(
        '{"url": "dQw4w9WgXcQ", "start_s": 1}\n{"url": ""}\nnot json\n{"url": "dQw4w9WgXcQ", "start_s": -3}\n'
        '{"url": "dQw4w9WgXcQ", "start_s": "x"}\n{"url": "dQw4w9WgXcQ", "emotion": "meh"}\n{"url": "dQw4w9WgXcQ", "start_s": 1.0}\n[1]\n'
    )
    sources, problems = read_manifest(path, MOODS)
    assert len(sources) == 1 and len(sources[0].windows) == 1
    kinds = [(p.row, p.status) for p in problems]
    assert kinds == [
        (2, "bad_row"),
        (3, "bad_row"),
        (4, "bad_row"),
        (5, "bad_row"),
        (6, "bad_row"),
        (7, "duplicate"),
        (8, "bad_row"),
    ]
    assert "allowed: happy, funny, sad, tender, exciting, angry, scary" in problems[4].error
    assert all(p.error.startswith(f"row {p.row}:") for p in problems)


def test_manifest_errors_are_one_line(tmp_path):
    with pytest.raises(MipkitError, match="does not exist"):
        read_manifest(tmp_path / "nope.csv", MOODS)
    (tmp_path / "m.csv").write_text("link,start\nx,1\n")
    with pytest.raises(MipkitError, match="no 'url' column"):
        read_manifest(tmp_path / "m.csv", MOODS)
    (tmp_path / "m.xlsx").write_text("")
    with pytest.raises(MipkitError, match="unknown format"):
        read_manifest(tmp_path / "m.xlsx", MOODS)


def test_evenly_spaced_windows():
    assert plan_windows(100.0, 10.0, 1) == [45.0]
    assert plan_windows(100.0, 10.0, 4) == [7.5, 32.5, 57.5, 82.5]
    assert plan_windows(12.0, 10.0, 3) == [0.0, 1.0, 2.0]
    assert plan_windows(9.0, 10.0, 2) == []


def test_resolve_windows_marks_what_cannot_fit():
    recipe = load_recipe("mipnet").with_overrides({"clip.clips_per_source": 2})
    request = SourceRequest("s", "u", [Window(1, 0.0), Window(2, 95.0), Window(3, None), Window(4, 90.0)])
    windows, failed = resolve_windows(request, 100.0, recipe)
    assert [start for start, _ in windows] == [0.0, 20.0, 70.0, 90.0]
    assert [(f.status, f.row, f.pair_id) for f in failed] == [("too_short", 2, "s_00095000")]
    _, failed = resolve_windows(SourceRequest("s", "u", [Window(1, None)]), 5.0, recipe)
    assert [f.status for f in failed] == ["too_short", "too_short"]


@pytest.mark.parametrize(
    "message, status",
    [
        ("ERROR: [youtube] x: Video unavailable. This video has been removed", records.UNAVAILABLE),
        ("ERROR: [youtube] x: Private video. Sign in if you've been granted access", records.UNAVAILABLE),
        ("ERROR: [youtube] x: Sign in to confirm you're not a bot", records.RATE_LIMITED),
        ("HTTP Error 429: Too Many Requests", records.RATE_LIMITED),
        ("ERROR: unable to download video data: HTTP Error 404: Not Found", records.UNAVAILABLE),
        ("[in#0] moov atom not found", records.DECODE_ERROR),
        ("<urlopen error timed out>", records.NETWORK_ERROR),
        (
            "Unable to download API page: Failed to resolve 'www.youtube.com' ([Errno -2] Name or service not known)",
            records.NETWORK_ERROR,
        ),
        ("ffmpeg exited with code 1", records.DOWNLOAD_ERROR),
    ],
)
def test_error_classification(message, status):
    assert classify_error(message) == status


def test_one_line_strips_colour_newlines_and_local_paths():
    text = one_line("\x1b[0;31mERROR:\x1b[0m could not open /home/alice/secret/dir/file.part\nnext line")
    assert text == "could not open file.part next line"


def test_splits_by_source_are_seeded_and_proportional():
    sources = [f"s{i}" for i in range(100)]
    ratios = {"train": 0.8, "validation": 0.1, "test": 0.1}
    first = assign_splits(sources, ratios, seed=0)
    assert first == assign_splits(list(reversed(sources)), ratios, seed=0)
    assert first != assign_splits(sources, ratios, seed=1)
    counts = {k: list(first.values()).count(k) for k in ratios}
    assert counts == {"train": 80, "validation": 10, "test": 10}
    small = assign_splits(["a", "b", "c"], ratios, seed=0)
    assert sorted(small.values()) == ["test", "train", "validation"]
    strata = {s: ("x" if i % 2 else "y") for i, s in enumerate(sources)}
    stratified = assign_splits(sources, ratios, 0, strata)
    for group in ("x", "y"):
        assert [stratified[s] for s in sources if strata[s] == group].count("test") == 5


def test_recipe_overrides_and_validation(tmp_path):
    recipe = load_recipe("mipnet")
    assert recipe.clip.seconds == 10.0 and recipe.clip.sample_rate == 32000 and recipe.taxonomy == "audioset_moods"
    assert recipe.with_overrides({"clip.clips_per_source": 3, "splits.seed": None}).clip.clips_per_source == 3
    with pytest.raises(MipkitError, match="sum to 1"):
        recipe.with_overrides({"splits.train": 0.5})
    secret = recipe.with_overrides(
        {"ytdlp.proxy": "http://user:pw@proxy:1", "ytdlp.cookiefile": "/home/me/cookies.txt"}
    )
    dumped = json.dumps(secret.to_dict())
    assert "pw@" not in dumped and "cookies.txt" not in dumped
    bad = tmp_path / "bad.toml"
    bad.write_text("[clip]\nsecs = 3\n")
    with pytest.raises(MipkitError, match="unknown keys"):
        load_recipe(str(bad))
    with pytest.raises(MipkitError, match="known recipes"):
        load_recipe("no-such-recipe")


def test_taxonomy_files_are_validated(tmp_path, monkeypatch):
    from mipkit.config.taxonomy import known_taxonomies

    assert "audioset_moods" in known_taxonomies() and "emoclim_image_to_music" not in known_taxonomies()
    with pytest.raises(MipkitError, match="is a mapping table"):
        load_taxonomy("emoclim_image_to_music")
    clash = tmp_path / "clash.toml"
    clash.write_text('[[classes]]\nname = "calm"\n[[classes]]\nname = "Calm"\n')
    with pytest.raises(MipkitError, match="names both 'calm' and 'Calm'"):
        load_taxonomy(str(clash))
    nameless = tmp_path / "nameless.toml"
    nameless.write_text('[[classes]]\ndisplay_name = "x"\n')
    with pytest.raises(MipkitError, match="class #1 has no name"):
        load_taxonomy(str(nameless))
    assert MOODS.normalize("/t/dd00033") == "sad" and MOODS.normalize(" Scary Music ") == "scary"


def test_fetch_errors_never_echo_the_proxy_or_the_cookies_file():
    from mipkit.config.recipe import YtdlpConfig
    from mipkit.pipeline.fetch import FetchError, with_retries

    cfg = YtdlpConfig(
        proxy="http://user:pw@proxy.invalid:3128", cookiefile="/home/me/secret-cookies.txt", extract_retries=0
    )

    def action(logger):
        logger.error("ERROR: cookies from /home/me/secret-cookies.txt rejected")
        raise OSError("Unable to connect to proxy http://user:pw@proxy.invalid:3128 with /home/me/secret-cookies.txt")

    with pytest.raises(FetchError) as failure:
        with_retries(action, cfg, "extract_info failed")
    message = str(failure.value)
    assert failure.value.status == "download_error"
    assert "pw@" not in message and "secret-cookies" not in message and "/home/me" not in message
    assert "<proxy>" in message and "<cookies>" in message


def test_manifest_rejects_what_cannot_be_a_window(tmp_path):
    path = tmp_path / "m.jsonl"
    lines = [
        {"url": "dQw4w9WgXcQ", "start_s": True},
        {"url": "dQw4w9WgXcQ", "start_s": 1e300},
        {"url": "../../etc/passwd"},
        {"url": "5"},
        {"url": "file:///etc/passwd"},
        {"url": "http://h/ok.mp4", "start_s": 3},
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    sources, problems = read_manifest(path, MOODS)
    assert [s.url for s in sources] == ["http://h/ok.mp4"]
    assert [p.status for p in problems] == ["bad_row"] * 5
    assert "is not a number" in problems[0].error and "between 0 and" in problems[1].error
    assert all("neither a YouTube id nor an http(s) URL" in p.error for p in problems[2:])
    csv_path = tmp_path / "m.csv"
    csv_path.write_text("url,start_s\nhttp://h/a.mp4,1,2,3\nhttp://h/b.mp4,4\n")
    sources, problems = read_manifest(csv_path, MOODS)
    assert len(sources) == 1 and "more cell(s) than the header" in problems[0].error


@pytest.mark.parametrize(
    "content, suffix, message",
    [
        (
            "url\\nhttp://h/caf\\xe9.mp4\\n".encode("latin-1").decode("unicode_escape").encode("latin-1"),
            ".csv",
            "not UTF-8",
        ),
        (b"url\\nhttp://h/a.mp4\\n".decode("unicode_escape").encode("utf-16"), ".csv", "not UTF-8"),
        (b"PAR1 not really parquet", ".parquet", "cannot be read as parquet"),
    ],
)
def test_unreadable_manifests_are_one_line_errors(tmp_path, content, suffix, message):
    path = tmp_path / f"m{suffix}"
    path.write_bytes(content)
    with pytest.raises(MipkitError, match=message):
        read_manifest(path, MOODS)


def test_one_line_keeps_urls_whole():
    text = one_line("ERROR: [generic] x: Unable to download http://127.0.0.1:8000/media/clip.mp4 to /tmp/work/a/b.part")
    assert "http://127.0.0.1:8000/media/clip.mp4" in text and "/tmp/work" not in text and "b.part" in text
