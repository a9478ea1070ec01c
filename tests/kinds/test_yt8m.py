"""YouTube-8M subsets: TFRecord reading, id lookup, metadata, and the title/keyword builds end to end.

Everything is offline: TFRecords are written here with the ``tfrecord`` package, the id lookup and
the "YouTube" pages are served from 127.0.0.1 and read by yt-dlp's real generic extractor.
"""

from __future__ import annotations

import gzip
import json
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
from datasets import load_from_disk
from typer.testing import CliRunner

from mipkit.cli.app import app
from mipkit.core.errors import MipkitError
from mipkit.demo.mediaserver import MediaServer
from tests.helpers.yt8m_fixtures import (
    BAD_RECORD_ID,
    KEYWORD_EXPECTED,
    MUSIC,
    TITLE_EXPECTED,
    all_videos,
    write_release,
    write_site,
    write_tfrecord,
    write_vocabulary,
)

runner = CliRunner()
DEAD = "http://127.0.0.1:9"  # nothing listens there: any request would fail


@pytest.fixture(scope="module")
def release(tmp_path_factory):
    root = tmp_path_factory.mktemp("yt8m")
    paths = write_release(root / "release")
    site = root / "site"
    site.mkdir()
    with MediaServer(site) as server:
        write_site(site, server.base_url)
        yield {**paths, "server": server, "cache": root / "cache", "root": root}


def _args(release, out: Path, kind: str = "title", *extra: str, server: bool = True) -> list[str]:
    base = release["server"].url("lookup") if server else DEAD
    template = release["server"].url("videos/{youtube_id}.html") if server else DEAD + "/{youtube_id}"
    return [
        "build",
        f"yt8m-{kind}",
        "--tfrecords",
        str(release["frames"]),
        "--out",
        str(out),
        "--vocabulary",
        str(release["vocabulary"]),
        "--lookup-base",
        base,
        "--video-url-template",
        template,
        "--cache-dir",
        str(release["cache"]),
        *extra,
    ]


def _invoke(args: list[str], code: int = 0):
    result = runner.invoke(app, args)
    assert result.exit_code == code, (result.output, result.exception)
    return result


def _statuses(out: Path) -> dict[str, set[str]]:
    report = json.loads(_invoke(["status", str(out), "--json"]).output)
    grouped: dict[str, set[str]] = {}
    for entry in report["failed"]:
        grouped.setdefault(entry["status"], set()).add(entry["pair_id"])
    assert sum(report["counts"].values()) == 9 and report["shards"] == {"done": 2, "total": 2}
    return {**grouped, "ok": report["counts"].get("ok", 0)}


def _expected(table: dict[str, set[str]]) -> dict:
    return {**{k: v for k, v in table.items() if k != "ok"}, "ok": len(table["ok"])}


@pytest.fixture(scope="module")
def title_build(release):
    out = release["root"] / "title"
    _invoke(_args(release, out, "title", "--metadata", str(release["metadata"])))
    return out


# --- features and TFRecords -------------------------------------------------------------------


def test_dequantize_matches_the_starter_code():
    from mipkit.kinds.yt8m.tfrecords import dequantize

    q = np.array([[0, 128, 255]], dtype=np.uint8)
    expected = np.array([[-2 + 4 / 512, 128 * 4 / 255 + 4 / 512 - 2, 2 + 4 / 512]], dtype=np.float32)
    out = dequantize(q)
    assert out.dtype == np.float32 and np.allclose(out, expected, atol=1e-6)
    torch = pytest.importorskip("torch")
    tensor = dequantize(torch.from_numpy(q))
    assert tensor.dtype == torch.float32 and np.allclose(tensor.numpy(), expected, atol=1e-6)


def test_tfrecords_round_trip_bytes_and_flag_bad_records(tmp_path, release):
    from mipkit.kinds.yt8m.tfrecords import parse_record, read_records

    records = list(read_records(release["frames"] / "validate0000.tfrecord", MUSIC))
    by_id = {r.video_id: r for r in records}
    for video in all_videos()[7:]:
        record = by_id[video.id]
        assert record.labels == video.labels and not record.error
        if video.is_music:  # frames decoded only for music videos, bytes identical (trailing zeros kept)
            assert record.rgb.dtype == np.uint8 and record.rgb.tobytes() == video.rgb.tobytes()
            assert record.audio.tobytes() == video.audio.tobytes() and record.num_seconds == video.seconds
        else:
            assert record.num_seconds == 0
    assert "1024 bytes, found 1000" in by_id[BAD_RECORD_ID].error
    assert "not a SequenceExample" in parse_record(b"\xff\xff garbage", 0).error
    gz = tmp_path / "train9.tfrecord.gz"
    gz.write_bytes(gzip.compress((release["frames"] / "train0000.tfrecord").read_bytes()))
    assert [r.video_id for r in read_records(gz)] == [v.id for v in all_videos()[:7]]


def test_music_label_is_looked_up_in_the_vocabulary(tmp_path):
    from mipkit.kinds.yt8m.tfrecords import music_label_index

    vocabulary = write_vocabulary(tmp_path / "vocabulary.csv")
    assert music_label_index(vocabulary) == MUSIC and music_label_index(None) == 14
    assert music_label_index(vocabulary, name="concert", kg_id="") == 3
    assert music_label_index(vocabulary, name="Renamed", kg_id="/m/0mdxd") == MUSIC
    with pytest.raises(MipkitError, match="no class named 'Polka'"):
        music_label_index(vocabulary, name="Polka", kg_id="")
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    with pytest.raises(MipkitError, match="no Index and Name columns"):
        music_label_index(tmp_path / "bad.csv")


def test_inputs_paths_globs_urls_and_download_cache(tmp_path, release):
    from mipkit.kinds.yt8m.tfrecords import fetch_to_cache, partition_of, resolve_inputs

    frames = release["frames"]
    assert [s.name for s in resolve_inputs([str(frames)])] == ["train0000.tfrecord", "validate0000.tfrecord"]
    assert [s.name for s in resolve_inputs([str(frames / "train*"), str(frames / "train0000.tfrecord")])] == [
        "train0000.tfrecord"
    ]
    with pytest.raises(MipkitError, match="matches no file"):
        resolve_inputs([str(tmp_path / "nothing*.tfrecord")])
    with pytest.raises(MipkitError, match="only local paths and http"):
        resolve_inputs(["gs://bucket/train0000.tfrecord"])
    assert [
        partition_of(n) for n in ("train0042.tfrecord", "validate0000.tfrecord", "test01.tfrecord", "x.tfrecord")
    ] == ["train", "validate", "test", None]
    served = release["server"]
    shutil.copy(frames / "train0000.tfrecord", Path(served.root) / "train0000.tfrecord")
    (source,) = resolve_inputs([served.url("train0000.tfrecord")])
    local = fetch_to_cache(source, tmp_path / "cache")
    assert local.read_bytes() == (frames / "train0000.tfrecord").read_bytes()
    assert fetch_to_cache(source, tmp_path / "cache") == local and not list(local.parent.glob("*.part"))
    with pytest.raises(OSError, match="HTTP 404"):
        fetch_to_cache(resolve_inputs([served.url("train9999.tfrecord")])[0], tmp_path / "cache", retries=0)


# --- id lookup and metadata ---------------------------------------------------------------------


def test_lookup_answers_cache_and_transient_errors(tmp_path, release):
    from mipkit.kinds.yt8m.lookup import DiskCache, LookupClient, parse_answer

    cache = DiskCache(tmp_path / "lookup")
    client = LookupClient(release["server"].url("lookup"), cache, rate=0, retries=0)
    assert client.url_for("nXSc").endswith("/lookup/nX/nXSc.js")
    good, error_doc, missing = (client.resolve(i) for i in ("AAaa", "ACac", "ADad"))
    assert (good.status, good.youtube_id) == ("ok", "ytAAaa00001")
    assert error_doc.status == "no_lookup" and "error document" in error_doc.error
    assert missing.status == "no_lookup" and "HTTP 404" in missing.error
    offline = LookupClient(DEAD, cache, rate=0, retries=1, backoff_s=0.01)
    assert offline.resolve("AAaa").cached and offline.resolve("ADad").status == "no_lookup"  # answered from disk
    transient = offline.resolve("ZZzz")
    assert transient.status == "network_error" and "2 tries" in transient.error and cache.get("ZZzz") is None
    assert parse_answer("nXSc", 'i("other","dQw4w9WgXcQ");').status == "no_lookup"
    assert cache.path_for("nXSc") != cache.path_for("nxsc") and ".." not in str(cache.path_for("../../x"))


def test_rate_limiter_spaces_calls():
    from mipkit.kinds.yt8m.lookup import RateLimiter

    limiter = RateLimiter(20.0)
    began = time.monotonic()
    for _ in range(5):
        limiter.wait()
    assert time.monotonic() - began >= 0.19


def test_metadata_from_ytdlp_page_and_file(tmp_path, release):
    from mipkit.config.recipe import YtdlpConfig
    from mipkit.kinds.yt8m.lookup import DiskCache
    from mipkit.kinds.yt8m.metadata import YtdlpMetadata, load_metadata_file, normalize_tags, status_of

    fetcher = YtdlpMetadata(
        YtdlpConfig(extract_retries=0),
        release["server"].url("videos/{youtube_id}.html"),
        rate=0,
        cache=DiskCache(tmp_path / "m"),
    )
    meta = fetcher.fetch("ABab", "ytABab00001")
    assert (meta.title, meta.tags, meta.origin) == ("Song B & Co", ["rock", "live"], "ytdlp")
    assert fetcher.fetch("ABab", "ytABab00001").origin == "cache"
    gone = fetcher.fetch("AGag", "ytAGag00001")
    assert gone.status == "unavailable" and "404" in gone.error
    assert status_of("ERROR: [youtube] abc: Private video. Sign in if you've been granted access") == "private"
    assert status_of("Sign in to confirm you're not a bot") == "rate_limited"
    assert normalize_tags(" a, b ,a,, c  d") == ["a", "b", "c d"] and normalize_tags(None) == []
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"id": "AAaa"}\nnot json\n')
    with pytest.raises(MipkitError, match="line 2 is not JSON"):
        load_metadata_file(bad)


# --- the builds ---------------------------------------------------------------------------------


def test_title_build_filters_joins_and_keeps_uint8(title_build):
    assert _statuses(title_build) == _expected(TITLE_EXPECTED)
    dataset = load_from_disk(str(title_build))
    assert set(dataset) == {"train", "test"}
    features = dataset["train"].features
    assert [*features] == [
        "video_id",
        "youtube_id",
        "labels",
        "rgb",
        "audio",
        "num_seconds",
        "title",
        "keywords",
        "split",
    ]
    assert (
        type(features["rgb"]).__name__ == "Array2D"
        and features["rgb"].shape == (None, 1024)
        and features["audio"].dtype == "uint8"
    )
    videos = {v.id: v for v in all_videos()}
    rows = {}
    for split, ds in dataset.items():
        frames = ds.with_format("numpy", columns=["rgb", "audio"], dtype=np.uint8)
        for i, row in enumerate(
            ds.select_columns(["video_id", "youtube_id", "labels", "num_seconds", "title", "keywords", "split"])
        ):
            video = videos[row["video_id"]]
            assert (
                frames[i]["rgb"].tobytes() == video.rgb.tobytes()
                and frames[i]["audio"].tobytes() == video.audio.tobytes()
            )
            assert row["num_seconds"] == video.seconds and row["labels"] == video.labels and row["split"] == split
            assert row["youtube_id"] == video.youtube_id
            rows[row["video_id"]] = (split, row["title"], row["keywords"])
    assert rows == {
        "AAaa": ("train", "Song A", ["pop", "dance"]),
        "ABab": ("train", "Song B & Co", ["rock", "live"]),
        "AFaf": ("train", "Only title", []),
        "BBbb": ("test", "Song BB", []),
    }
    stats = [json.loads((title_build / "build" / "shards" / f"{i:05d}" / "stats.json").read_text()) for i in (0, 1)]
    assert [s["skipped"]["not_music"] for s in stats] == [1, 1] and [s["records"] for s in stats] == [7, 4]
    summary = json.loads((title_build / "build" / "summary.json").read_text())
    assert summary["skipped"] == {"not_music": 2} and summary["splits"] == {"train": 3, "test": 1}


def test_fast_arrow_reading_for_the_trainer(title_build):
    from mipkit.kinds.yt8m.tfrecords import dequantize, uint8_frames

    ds = load_from_disk(str(title_build))["train"]
    batch = ds.with_format("arrow")[[2, 0]]
    rgb, audio = uint8_frames(batch["rgb"], 1024), uint8_frames(batch["audio"], 128)
    assert [a.shape for a in rgb] == [(2, 1024), (5, 1024)] and [a.shape for a in audio] == [(2, 128), (5, 128)]
    assert rgb[1].dtype == np.uint8 and np.array_equal(
        rgb[1], ds.with_format("numpy", columns=["rgb"], dtype=np.uint8)[0]["rgb"]
    )
    assert dequantize(rgb[0]).shape == (2, 1024)


def test_resume_adds_nothing_and_a_killed_shard_is_redone_from_caches(release, title_build):
    server = release["server"]
    shard1 = title_build / "build" / "shards" / "00001"
    before = {p: p.stat().st_mtime_ns for p in (title_build / "build" / "shards").rglob("stats.json")}
    sent = server.bytes_sent
    _invoke(_args(release, title_build, "title", "--metadata", str(release["metadata"])))
    assert {p: p.stat().st_mtime_ns for p in before} == before and server.bytes_sent == sent
    (shard1 / "stats.json").unlink()  # a kill after the data, before the commit marker
    (shard1 / "videos.parquet.tmp").write_bytes(b"truncated")
    _invoke(_args(release, title_build, "title", "--metadata", str(release["metadata"])))
    assert server.bytes_sent == sent  # lookups and yt-dlp answers came from the disk cache
    assert _statuses(title_build) == _expected(TITLE_EXPECTED)
    assert sorted(load_from_disk(str(title_build))["test"]["video_id"]) == ["BBbb"] and not list(
        title_build.rglob("*.tmp")
    )


def test_keyword_build_reuses_the_written_metadata_offline(release, title_build, tmp_path):
    written = title_build / "build" / "metadata.jsonl"
    lines = {json.loads(line)["id"]: json.loads(line) for line in written.read_text().splitlines()}
    assert set(lines) == {v.id for v in all_videos() if v.is_music}
    assert lines["ABab"] == {
        "id": "ABab",
        "youtube_id": "ytABab00001",
        "title": "Song B & Co",
        "tags": ["rock", "live"],
    }
    assert lines["ACac"]["status"] == "no_lookup" and lines["AGag"]["status"] == "unavailable"
    out = tmp_path / "keyword"
    _invoke(_args(release, out, "keyword", "--metadata", str(written), "--no-fetch", server=False))
    assert _statuses(out) == _expected(KEYWORD_EXPECTED)
    dataset = load_from_disk(str(out))
    assert sorted(dataset["train"]["video_id"]) == ["AAaa", "ABab"] and dataset["test"]["keywords"] == [
        ["jazz", "blues"]
    ]
    assert all(len(k) > 0 for split in dataset.values() for k in split["keywords"])


def test_split_options_and_process_pool(release, title_build, tmp_path):
    metadata = str(title_build / "build" / "metadata.jsonl")
    ratio = tmp_path / "ratio"
    _invoke(
        _args(
            release,
            ratio,
            "title",
            "--metadata",
            metadata,
            "--no-fetch",
            "--split-by",
            "ratio",
            "--seed",
            "3",
            server=False,
        )
    )
    splits = {s: sorted(ds["video_id"]) for s, ds in load_from_disk(str(ratio)).items()}
    assert set(splits) == {"train", "test"} and sum(map(len, splits.values())) == 4 and len(splits["test"]) == 1
    pool = tmp_path / "pool"
    _invoke(
        _args(
            release,
            pool,
            "title",
            "--metadata",
            metadata,
            "--no-fetch",
            "--validate-as",
            "validation",
            "--workers",
            "2",
            server=False,
        )
    )
    dataset = load_from_disk(str(pool))
    assert set(dataset) == {"train", "validation"} and dataset["validation"]["video_id"] == ["BBbb"]
    assert sorted(dataset["train"]["video_id"]) == sorted(load_from_disk(str(title_build))["train"]["video_id"])


def test_cli_errors_are_one_line(release, title_build, tmp_path):

    result = runner.invoke(app, _args(release, title_build, "keyword", "--metadata", str(release["metadata"])))
    assert isinstance(result.exception, MipkitError) and "pass --overwrite" in str(result.exception)
    odd = tmp_path / "odd"
    odd.mkdir()
    write_tfrecord(odd / "part-0.tfrecord", all_videos()[:1])
    args = _args(release, tmp_path / "x", "title", "--metadata", str(release["metadata"]))
    args[args.index("--tfrecords") + 1] = str(odd)
    result = runner.invoke(app, args)
    assert isinstance(result.exception, MipkitError) and "--split-by ratio" in str(result.exception)
    result = runner.invoke(app, _args(release, tmp_path / "y", "title", "--no-fetch"))
    assert isinstance(result.exception, MipkitError) and "--no-fetch needs --metadata" in str(result.exception)


def test_transient_failures_are_retried_with_retry_failed(release, tmp_path):
    recipe = tmp_path / "fast.toml"
    recipe.write_text(
        (Path(__file__).parents[2] / "recipes" / "yt8m-title.toml")
        .read_text()
        .replace("lookup_retries = 3", "lookup_retries = 0")
        .replace("extract_retries = 2", "extract_retries = 0")
    )
    out, cache = tmp_path / "retry", str(tmp_path / "cache")
    args = _args(release, out, "title", "--recipe", str(recipe), server=False)
    args[args.index("--cache-dir") + 1] = cache
    _invoke(args, code=1)  # nothing reachable: every music video is a network_error, nothing is built
    report = json.loads(_invoke(["status", str(out), "--json"]).output)
    assert report["counts"] == {"bad_record": 1, "network_error": 8} and report["shards"] == {"done": 2, "total": 2}
    assert not list((tmp_path / "cache").rglob("*.json"))  # transient failures are never cached
    args = _args(
        release, out, "title", "--recipe", str(recipe), "--metadata", str(release["metadata"]), "--retry-failed"
    )
    args[args.index("--cache-dir") + 1] = cache
    result = runner.invoke(app, args)  # another --metadata is another build: refused
    assert isinstance(result.exception, MipkitError) and "--overwrite" in str(result.exception)
    args = _args(release, out, "title", "--recipe", str(recipe), "--retry-failed")
    args[args.index("--cache-dir") + 1] = cache
    _invoke(args)
    report = json.loads(_invoke(["status", str(out), "--json"]).output)
    # Without --metadata only ABab and BBbb have a page to read; the others' pages are missing (404).
    assert report["counts"] == {"bad_record": 1, "no_lookup": 2, "ok": 2, "unavailable": 4}
    assert sorted(v for split in load_from_disk(str(out)).values() for v in split["video_id"]) == ["ABab", "BBbb"]


@pytest.mark.slow
def test_ray_engine_builds_the_same_rows(release, title_build, tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "ray"
    _invoke(
        _args(
            release,
            out,
            "title",
            "--metadata",
            str(title_build / "build" / "metadata.jsonl"),
            "--no-fetch",
            "--engine",
            "ray",
            "--workers",
            "2",
            server=False,
        )
    )
    assert _statuses(out) == _expected(TITLE_EXPECTED)
    ours, theirs = load_from_disk(str(out)), load_from_disk(str(title_build))
    assert {s: sorted(ds["video_id"]) for s, ds in ours.items()} == {
        s: sorted(ds["video_id"]) for s, ds in theirs.items()
    }


def test_status_counts_skips_and_inspect_reads_yt8m_datasets(title_build):
    report = json.loads(_invoke(["status", str(title_build), "--json"]).output)
    assert report["skipped"] == {"not_music": 2}
    assert all(entry["status"] != "not_music" for entry in report["failed"])
    assert "not_music" in _invoke(["status", str(title_build)]).stdout
    shown = _invoke(["inspect", str(title_build)]).stdout
    assert "video_id" in shown and "AAaa" in shown and "Song A" in shown and "emotion" not in shown
