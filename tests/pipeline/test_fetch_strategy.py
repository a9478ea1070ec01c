"""Recipe ``fetch.strategy``: sections, streams and auto's fall-back, on the fault server (127.0.0.1) with
real yt-dlp and ffmpeg. A throttled or Range-less host is finished by ``auto`` through streams, with clips
identical to what sections give."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from mipkit.core.errors import MipkitError
from mipkit.core.records import SourceRequest, Window
from mipkit.demo.faultserver import FaultServer, IgnoreRange, Throttle
from mipkit.demo.synthetic_media import make_video, spec_for_index
from mipkit.pipeline.politeness import HostGate
from mipkit.pipeline.process import build_source
from mipkit.pipeline.shard import _pairs_table

SECONDS = 16.0
CLIP = 3.0
STARTS = (1.25, 6.5, 11.75)


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> Path:
    """A muxed mp4, and DASH-like parts of it: one audio-only file and video-only files at two sizes."""
    root = tmp_path_factory.mktemp("strategy")
    spec = spec_for_index(70, SECONDS)
    make_video(root / "muxed.mp4", spec, video_kbps=200)
    make_video(root / "big.mp4", spec, size="640x480", video_kbps=400)
    copy = ["ffmpeg", "-nostdin", "-v", "error", "-y", "-i"]
    subprocess.run([*copy, str(root / "muxed.mp4"), "-vn", "-c", "copy", str(root / "a.m4a")], check=True)
    subprocess.run([*copy, str(root / "muxed.mp4"), "-an", "-c", "copy", str(root / "v120.mp4")], check=True)
    subprocess.run([*copy, str(root / "big.mp4"), "-an", "-c", "copy", str(root / "v480.mp4")], check=True)
    return root


def _mpd(server: FaultServer, media: Path, name: str, audio: str, small: str, big: str) -> str:
    """A DASH manifest (one BaseURL per Representation): yt-dlp offers each as a plain http format."""

    def rep(rid: str, url: str, mime: str, extra: str) -> str:
        return f'<Representation id="{rid}" {extra}><BaseURL>{url}</BaseURL></Representation>'.replace("MIME", mime)

    (media / name).write_text(
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<MPD xmlns="urn:mpeg:dash:schema:mpd:2011" type="static" mediaPresentationDuration="PT16S" '
        'minBufferTime="PT1.5S" profiles="urn:mpeg:dash:profile:isoff-on-demand:2011"><Period>'
        '<AdaptationSet mimeType="audio/mp4">'
        + rep("a", audio, "", 'codecs="mp4a.40.2" bandwidth="128000" audioSamplingRate="44100"')
        + '</AdaptationSet><AdaptationSet mimeType="video/mp4">'
        + rep("v120", small, "", 'codecs="avc1.42c00d" bandwidth="200000" width="160" height="120"')
        + rep("v480", big, "", 'codecs="avc1.42c01e" bandwidth="400000" width="640" height="480"')
        + "</AdaptationSet></Period></MPD>"
    )
    return server.url(name)


def _recipe(strategy: str, **extra):
    from conftest import small_recipe

    return small_recipe(**{"clip.seconds": CLIP, "fetch.strategy": strategy, **extra})


def _request(url: str, source_id: str = "s") -> SourceRequest:
    return SourceRequest(
        source_id=source_id, url=url, windows=[Window(row=i + 1, start_s=s) for i, s in enumerate(STARTS)]
    )


def _pcm(pair) -> np.ndarray:
    pcm, _ = sf.read(io.BytesIO(pair.audio_flac), dtype="int16")
    return pcm


def _gray(pair) -> float:
    return float(np.asarray(Image.open(io.BytesIO(pair.image_jpeg)).convert("L")).mean())


def _ranged(server: FaultServer, url: str) -> list:
    return [r for r in server.requests_for(url) if r.method == "GET" and r.range]


def _whole_gets(server: FaultServer, url: str, direct: bool = True) -> list:
    """Plain GETs of ``url`` but yt-dlp's own first one when ``url`` is the page (a direct link)."""
    gets = [r for r in server.requests_for(url) if r.method == "GET" and not r.range]
    return gets[1:] if direct else gets


def test_a_throttled_host_is_finished_through_streams_with_the_clips_sections_give(media, tmp_path):
    with FaultServer(media) as server:
        clean = server.url("muxed.mp4", fresh=True)
        slow = server.url("muxed.mp4", Throttle(bytes_per_s=32 * 1024))
        ref_pairs, ref_statuses = build_source(_request(clean), _recipe("sections"), tmp_path / "a")
        pairs, statuses = build_source(_request(slow), _recipe("auto"), tmp_path / "b")
        assert [s.status for s in ref_statuses] == ["ok"] * 3, ref_statuses
        assert [s.status for s in statuses] == ["ok"] * 3, statuses
        assert {s.fetch_strategy for s in ref_statuses} == {p.fetch_strategy for p in ref_pairs} == {"sections"}
        # the first window was cut as slow and redone from the stream, like every later one
        assert [s.fetch_strategy for s in statuses] == ["streams"] * 3
        assert {p.fetch_strategy for p in pairs} == {"streams"}
        assert any("Throttle" in r.faults for r in _ranged(server, slow)), "the throttle never fired"
        assert len(_whole_gets(server, slow)) == 1, "the stream is fetched once"
    for ref, got in zip(ref_pairs, pairs):
        assert ref.pair_id == got.pair_id
        assert len(_pcm(got)) == int(CLIP * 32000)
        assert np.array_equal(_pcm(ref), _pcm(got)), "the clip differs from what sections give"
        assert _gray(got) == pytest.approx(_gray(ref), abs=1.0)
    assert not [p for p in tmp_path.rglob("*") if p.is_file()], "a stream copy was left"


def test_a_host_without_range_goes_to_streams(media, tmp_path):
    with FaultServer(media) as server:
        url = server.url("muxed.mp4", IgnoreRange())
        pairs, statuses = build_source(_request(url), _recipe("auto"), tmp_path)
        assert [s.status for s in statuses] == ["ok"] * 3, statuses
        assert [s.fetch_strategy for s in statuses] == ["streams"] * 3
        # what the shard keeps: a pairs column and a key of every status row
        assert _pairs_table(pairs).column("fetch_strategy").to_pylist() == ["streams"] * 3
        assert statuses[0].to_dict()["fetch_strategy"] == "streams"
        # yt-dlp's read of the link, then one relay request answered whole: the file is fetched once
        assert [r.status for r in server.requests_for(url)] == [200, 200]


def test_separate_formats_on_a_host_without_range_are_each_fetched_once(media, tmp_path):
    with FaultServer(media) as server:
        audio, small, big = (server.url(n, IgnoreRange()) for n in ("a.m4a", "v120.mp4", "v480.mp4"))
        manifest = _mpd(server, media, "norange.mpd", audio, small, big)
        recipe = _recipe("auto", **{"clip.image_max_side": 100})
        _, statuses = build_source(_request(manifest), recipe, tmp_path)
        assert [s.status for s in statuses] == ["ok"] * 3, statuses
        assert {s.fetch_strategy for s in statuses} == {"streams"}
        # the relay holds the chosen formats whole after the first window: no other stream is fetched
        assert len(server.requests_for(audio)) == len(server.requests_for(big)) == 1
        assert not server.requests_for(small)


def test_streams_fetch_the_smallest_formats_once_for_all_windows(media, tmp_path):
    with FaultServer(media) as server:
        audio, small, big = server.url("a.m4a", fresh=True), server.url("v120.mp4", fresh=True), server.url("v480.mp4")
        manifest = _mpd(server, media, "s.mpd", audio, small, big)
        recipe = _recipe("streams", **{"clip.image_max_side": 100})
        pairs, statuses = build_source(_request(manifest), recipe, tmp_path)
        assert [s.status for s in statuses] == ["ok"] * 3, statuses
        assert {s.fetch_strategy for s in statuses} == {"streams"}
        assert len(_whole_gets(server, audio, direct=False)) == 1 and not _ranged(server, audio)
        assert len(_whole_gets(server, small, direct=False)) == 1 and not _ranged(server, small)
        assert not server.requests_for(big), "the large video is not the smallest big enough"
        # the same windows as sections of the best formats: same samples, a picture of the same frame
        ref_pairs, ref_statuses = build_source(_request(manifest), _recipe("sections"), tmp_path / "ref")
        assert {s.fetch_strategy for s in ref_statuses} == {"sections"} and _ranged(server, big)
    for ref, got in zip(ref_pairs, pairs):
        assert np.array_equal(_pcm(ref), _pcm(got))
        assert max(Image.open(io.BytesIO(got.image_jpeg)).size) == 100  # from the 160x120 stream
        assert _gray(got) == pytest.approx(_gray(ref), abs=3.0)


def test_a_later_source_on_a_fallen_back_host_starts_with_streams(media, tmp_path):
    gate = HostGate(tmp_path / "gate")
    with FaultServer(media) as server:
        first = server.url("muxed.mp4", Throttle(bytes_per_s=32 * 1024))
        _, statuses = build_source(_request(first, "s1"), _recipe("auto"), tmp_path / "w", gate)
        assert {s.fetch_strategy for s in statuses} == {"streams"}
        second = server.url("muxed.mp4", fresh=True)
        _, statuses = build_source(_request(second, "s2"), _recipe("auto"), tmp_path / "w", gate)
        assert [s.status for s in statuses] == ["ok"] * 3
        assert {s.fetch_strategy for s in statuses} == {"streams"}
        assert not _ranged(server, second), "the second source tried sections first"
        assert len(_whole_gets(server, second)) == 1
    # a new gate folder (another build) remembers nothing: sections first
    with FaultServer(media) as server:
        url = server.url("muxed.mp4", fresh=True)
        _, statuses = build_source(_request(url), _recipe("auto"), tmp_path / "w2", HostGate(tmp_path / "gate2"))
        assert {s.fetch_strategy for s in statuses} == {"sections"} and _ranged(server, url)


def test_a_bad_strategy_is_a_one_line_recipe_error(tmp_path):
    from conftest import small_recipe

    with pytest.raises(MipkitError, match=r"fetch\.strategy: Input should be 'sections', 'streams' or 'auto'"):
        small_recipe(**{"fetch.strategy": "fast"})
    with pytest.raises(MipkitError, match=r"fetch\.min_section_kib_s: Input should be greater than 0"):
        small_recipe(**{"fetch.min_section_kib_s": 0.0})
    from mipkit.config.recipe import load_recipe

    recipe = tmp_path / "r.toml"
    source = (Path(__file__).parents[2] / "recipes" / "mipnet.toml").read_text()
    assert 'strategy = "auto"' in source
    recipe.write_text(source.replace('strategy = "auto"', 'strategy = "whole"', 1))
    with pytest.raises(MipkitError) as caught:
        load_recipe(str(recipe))
    assert str(caught.value) == (
        "recipe r.toml [fetch] strategy: Input should be 'sections', 'streams' or 'auto' (got 'whole')"
    )


def test_the_fetch_strategy_flag_is_checked_before_any_work(tmp_path):
    import sys

    manifest = tmp_path / "m.csv"
    manifest.write_text("url,start_s,emotion\nhttp://127.0.0.1:9/a.mp4,1,happy\n")
    args = ["build", "mipnet", "--manifest", str(manifest), "--out", str(tmp_path / "out"), "--fetch-strategy", "fast"]
    result = subprocess.run([sys.executable, "-m", "mipkit", *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2, result.stdout + result.stderr
    shown = result.stdout + result.stderr
    assert "fetch.strategy: Input should be 'sections', 'streams' or 'auto' (got 'fast')" in shown
    assert not (tmp_path / "out").exists()


def test_a_stream_over_the_whole_file_limit_is_refused_and_leaves_nothing(media, tmp_path):
    from mipkit.media.relay import MediaRelay

    with FaultServer(media) as server, MediaRelay(tmp_path / "relay", max_whole_bytes=50_000) as relay:
        url = server.url("a.m4a", fresh=True)
        ticket = relay.register(url, {})
        assert not relay.fetch_whole(ticket)
        assert [f.kind for f in ticket.faults] == ["too_large"]
        assert "whole-file limit" in ticket.faults[0].message
        assert not [p for p in tmp_path.rglob("*") if p.is_file()]
        assert [r.range for r in server.requests_for(url)] == [""], "one plain GET"
