"""The build fast path: one ffmpeg per window through the media relay, exact in every container,
with secrets kept off argv and every request through the proxy. Real yt-dlp, ffmpeg and servers on 127.0.0.1."""

from __future__ import annotations

import functools
import io
import subprocess
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from helpers.forward_proxy import ForwardProxy
from PIL import Image

from mipkit.core.records import SourceRequest, Window
from mipkit.demo.faultserver import FaultServer
from mipkit.demo.mediaserver import MediaServer
from mipkit.demo.synthetic_media import make_video, spec_for_index
from mipkit.media.relay import MediaRelay, NotHttpError
from mipkit.media.window import WindowJob, window_command
from mipkit.pipeline.process import build_source

SECONDS = 14.0
CLIP = 3.0
RATE = 32000
START = 7.321  # not on a frame, packet or keyframe boundary
# name -> (make_video options, has video)
CONTAINERS = {
    "fast.mp4": ({}, True),
    "moov-at-end.mp4": ({"faststart": False}, True),
    "v.webm": ({}, True),
    "v.mkv": ({}, True),
    "a.ogg": ({}, False),
    "a.m4a": ({}, False),
}


@pytest.fixture(scope="module")
def container_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("containers")
    for index, (name, (options, _)) in enumerate(CONTAINERS.items()):
        make_video(root / name, spec_for_index(60 + index, SECONDS), **options)
    return root


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        return


@pytest.fixture(scope="module")
def servers(container_dir):
    """A Range-capable host and one without Range support (Python's own ``http.server``)."""
    plain = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(container_dir)))
    threading.Thread(target=plain.serve_forever, daemon=True).start()
    with MediaServer(container_dir) as ranged:
        yield {"range": ranged.base_url, "no-range": f"http://127.0.0.1:{plain.server_address[1]}"}
    plain.shutdown()
    plain.server_close()


def _recipe(image: bool, **extra):
    from conftest import small_recipe

    return small_recipe(**{"clip.seconds": CLIP, "clip.image": image, **extra})


def _whole_decode(path: Path) -> np.ndarray:
    """The reference: the whole file decoded from its start, as a player would."""
    cmd = [
        "ffmpeg",
        "-nostdin",
        "-v",
        "error",
        "-i",
        str(path),
        "-vn",
        "-ac",
        "1",
        "-ar",
        str(RATE),
        "-f",
        "f32le",
        "pipe:1",
    ]
    return np.frombuffer(subprocess.run(cmd, capture_output=True, check=True).stdout, dtype="<f4")


def _lag(clip: np.ndarray, reference: np.ndarray, first: int, search: int = 400) -> int:
    segment = reference[first - search : first + RATE // 2 + search]
    return int(np.argmax(np.correlate(segment, clip[: RATE // 2], mode="valid"))) - search


@pytest.mark.parametrize("host", ["range", "no-range"])
@pytest.mark.parametrize("name", list(CONTAINERS))
def test_every_container_gives_the_exact_window(servers, container_dir, tmp_path, host, name):
    has_video = CONTAINERS[name][1]
    request = SourceRequest(source_id="s", url=f"{servers[host]}/{name}", windows=[Window(row=1, start_s=START)])
    pairs, statuses = build_source(request, _recipe(has_video), tmp_path)
    assert [s.status for s in statuses] == ["ok"], statuses
    pcm, rate = sf.read(io.BytesIO(pairs[0].audio_flac), dtype="float32")
    assert rate == RATE and len(pcm) == int(CLIP * RATE)
    first = int(round(START * RATE))
    reference = _whole_decode(container_dir / name)
    assert _lag(pcm, reference, first) == 0, "the clip does not start on the sample asked for"
    assert np.corrcoef(pcm, reference[first : first + len(pcm)])[0, 1] > 0.999
    if has_video:
        gray = float(np.asarray(Image.open(io.BytesIO(pairs[0].image_jpeg)).convert("L")).mean())
        index = 60 + list(CONTAINERS).index(name)
        assert gray == pytest.approx(spec_for_index(index, SECONDS).expected_gray(START + CLIP / 2), abs=2.0)
    assert not list(tmp_path.rglob("*")) or all(p.is_dir() for p in tmp_path.rglob("*")), "temporary files were left"


def test_cookies_headers_and_proxy_never_reach_an_argv_and_every_request_is_proxied(
    container_dir, tmp_path, monkeypatch
):
    cookie_value = "cookie-value-4c1d"
    cookies = tmp_path / "cookies.txt"
    cookies.write_text(f"# Netscape HTTP Cookie File\n127.0.0.1\tFALSE\t/\tFALSE\t0\tsession\t{cookie_value}\n")
    spawned: list[list[str]] = []
    real_popen = subprocess.Popen

    class Recording(real_popen):
        def __init__(self, args, *a, **kw):
            spawned.append([str(x) for x in (args if isinstance(args, (list, tuple)) else [args])])
            super().__init__(args, *a, **kw)

    with FaultServer(container_dir) as host, ForwardProxy() as proxy:
        url = host.url("fast.mp4", fresh=True)
        monkeypatch.setenv("MIPKIT_PROXY", proxy.url.replace("http://", "http://user:proxy-pw@"))
        monkeypatch.setattr(subprocess, "Popen", Recording)
        request = SourceRequest(
            source_id="s", url=url, windows=[Window(row=1, start_s=2.0), Window(row=2, start_s=9.0)]
        )
        pairs, statuses = build_source(request, _recipe(True, **{"ytdlp.cookiefile": str(cookies)}), tmp_path / "work")
        monkeypatch.setattr(subprocess, "Popen", real_popen)
        served = host.requests_for(url)
    assert [s.status for s in statuses] == ["ok", "ok"], statuses
    assert spawned and any(argv[0] == "ffmpeg" for argv in spawned)
    for argv in spawned:
        joined = " ".join(argv)
        assert cookie_value not in joined and "proxy-pw" not in joined and "Cookie" not in joined, argv
    assert len(proxy.seen) == len(served) >= 3, "a request went around the proxy"
    assert all(seen["auth"] for seen in proxy.seen), "the proxy's credentials were not sent"
    media = [seen for seen in proxy.seen if seen["headers"].get("Range")]
    assert media and all(cookie_value in seen["headers"].get("Cookie", "") for seen in media), (
        "the media requests lost the cookies"
    )
    assert not (tmp_path / "work" / ".private").exists() or not list((tmp_path / "work" / ".private").iterdir())


def test_ffmpeg_reads_only_the_relay_or_our_files():
    job = WindowJob(
        audio_url="http://127.0.0.1:9/a",
        video_url="http://127.0.0.1:9/v",
        start_s=3.0,
        seconds=10.0,
        sample_rate=RATE,
        channels=1,
        image_at_s=8.0,
        image_max_side=512,
        out_flac=Path("w.flac"),
    )
    argv = window_command(job, rw_timeout_s=7.0)
    whitelist = [argv[i + 1] for i, a in enumerate(argv) if a == "-protocol_whitelist"]
    assert whitelist == ["http,tcp", "http,tcp"]
    assert argv.count("-rw_timeout") == 2 and argv[argv.index("-rw_timeout") + 1] == "7000000"
    assert "select" not in " ".join(argv) and "force_key_frames" not in " ".join(argv)


def test_the_relay_opens_only_http(tmp_path):
    with MediaRelay(tmp_path) as relay:
        with pytest.raises(NotHttpError, match="only http"):
            relay.register("file:///etc/passwd", {})
        with pytest.raises(NotHttpError):
            relay.register("ftp://example.invalid/a.mp4", {})
