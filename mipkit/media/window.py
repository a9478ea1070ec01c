"""One ffmpeg per window: the clip (FLAC) and the frame (PNG) from the resolved media URL(s).

The audio input is opened with an input seek to just before ``start_s`` (a decoder needs a few frames
to settle) and decoded straight to the output rate, then trimmed by sample count to exactly
``seconds * rate`` samples from ``start_s``; the frame comes from a second input seeked to the
image time (no select filter, no decode of the frames in between). With separate audio and video
tracks (DASH) those are the two URLs; with one muxed file both inputs read the same URL (the floor's
two processes make the same two requests). Nothing is re-encoded but the outputs.

Matroska/WebM audio is not seeked: its block times have 1-ms resolution and ffmpeg offsets them by
the file's start time (Opus in WebM: 8 ms off; with ``-seek_timestamp`` still up to 1 ms), so the
audio input is decoded from the start and trimmed by sample count, which matches the whole-file decode
exactly (docs/benchmarks.md has the per-container evidence). mp4/m4a (faststart or moov at the
end) and ogg seek exactly.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import soundfile as sf

# ffmpeg speaks only to our relay on 127.0.0.1 (plain http) or reads the build's own temp files.
PROTOCOLS_REMOTE = "http,tcp"
PROTOCOLS_LOCAL = "file"
# More than the longest audio decoder settling we meet (an AAC or mp3 frame, Vorbis' 2048-sample
# blocks, Opus' 80-ms pre-roll); every extra 0.1 s is 0.1 s more of the source's bytes read per window.
AUDIO_PREROLL_S = 0.2
_DURATION = re.compile(r"Duration: (\d+):(\d\d):(\d\d(?:\.\d+)?)")


@dataclass
class WindowJob:
    audio_url: str
    video_url: str | None  # None: no image wanted, or an audio-only source
    start_s: float
    seconds: float
    sample_rate: int
    channels: int
    image_at_s: float
    image_max_side: int
    out_flac: Path
    seek_audio: bool = True  # False: decode the audio from the start (Matroska)
    local: bool = False  # the URLs are files of this build (not remote)


@dataclass
class WindowResult:
    returncode: int
    samples: int = 0
    png: bytes = b""
    duration_s: float | None = None  # what the container declares, parsed from ffmpeg's own log
    errors: list[str] = field(default_factory=list)  # ffmpeg's error/warning lines
    timed_out: bool = False


def _scale_filter(max_side: int) -> str:
    if not max_side:
        return "null"
    factor = f"min(1,{max_side}/max(iw,ih))"
    return f"scale=w='max(2,trunc(iw*{factor}/2)*2)':h='max(2,trunc(ih*{factor}/2)*2)':flags=lanczos"


def window_command(job: WindowJob, rw_timeout_s: float) -> list[str]:
    """The ffmpeg argv of one window: only URLs on 127.0.0.1 or our own files, never a secret."""
    samples = int(round(job.seconds * job.sample_rate))
    protocols = PROTOCOLS_LOCAL if job.local else PROTOCOLS_REMOTE
    per_input = ["-protocol_whitelist", protocols]
    if not job.local:
        per_input += ["-rw_timeout", str(int(rw_timeout_s * 1e6))]
    cmd = ["ffmpeg", "-nostdin", "-hide_banner", "-nostats", "-loglevel", "level+info", "-y"]
    # The decoder needs a few frames to settle after a seek (AAC overlap): seek AUDIO_PREROLL_S early and
    # drop that lead-in by sample count. Matroska is decoded from the start (see the module docstring).
    lead = min(AUDIO_PREROLL_S, job.start_s) if job.seek_audio else job.start_s
    if job.seek_audio and job.start_s > lead:
        # -seek2any: in a muxed file the demuxer would seek every stream to the video keyframe before the
        # target (up to a whole GOP of bytes more); the audio input decodes no video, so the audio's own
        # sample is the place to start.
        cmd += [*per_input, "-seek2any", "1", "-ss", f"{job.start_s - lead:.6f}", "-i", job.audio_url]
    else:
        cmd += [*per_input, "-i", job.audio_url]
    first = int(round(lead * job.sample_rate))
    audio_filter = f"aresample={job.sample_rate},atrim=start_sample={first}:end_sample={first + samples}"
    if job.video_url:
        # -t as an input option: stop reading the video input just past the frame (one process runs
        # both inputs at once, and an unbounded one would read ahead as far as the audio does).
        cmd += [*per_input, "-ss", f"{max(job.image_at_s, 0.0):.6f}", "-t", "1", "-i", job.video_url]
    cmd += [
        "-map",
        "0:a:0",
        "-ac",
        str(job.channels),
        "-af",
        audio_filter,
        "-c:a",
        "flac",
        "-sample_fmt",
        "s16",
        "-f",
        "flac",
        str(job.out_flac),
    ]
    if job.video_url:
        cmd += [
            "-map",
            "1:v:0?",
            "-frames:v",
            "1",
            "-vf",
            _scale_filter(job.image_max_side),
            "-f",
            "image2pipe",
            "-c:v",
            "png",
            "pipe:1",
        ]
    return cmd


def run_window(job: WindowJob, rw_timeout_s: float, wall_timeout_s: float, env: dict[str, str]) -> WindowResult:
    """Run the window's ffmpeg; the caller decides what the outcome means (statuses live there)."""
    try:
        proc = subprocess.run(
            window_command(job, rw_timeout_s), capture_output=True, timeout=wall_timeout_s, env=env, check=False
        )
    except subprocess.TimeoutExpired:
        return WindowResult(returncode=-1, timed_out=True, errors=[f"the window took longer than {wall_timeout_s:g} s"])
    log = proc.stderr.decode("utf-8", "replace").splitlines()
    result = WindowResult(returncode=proc.returncode, png=proc.stdout)
    result.errors = [
        line.split("] ", 1)[-1].strip() for line in log if line.startswith(("[error]", "[fatal]", "[panic]"))
    ]
    for line in log:
        match = _DURATION.search(line)
        if match:
            hours, minutes, seconds = match.groups()
            result.duration_s = int(hours) * 3600 + int(minutes) * 60 + float(seconds)
            break
    if proc.returncode == 0 and job.out_flac.is_file():
        try:
            result.samples = sf.info(str(job.out_flac)).frames
        except (RuntimeError, sf.LibsndfileError):
            result.samples = 0
    return result


def seeks_exactly(container: str | None) -> bool:
    """Whether an input seek on this container's audio lands on the sample (see the module docstring)."""
    return (container or "").lower() not in ("webm", "mkv", "mka", "matroska", "matroska,webm")


def probe_duration(url: str, rw_timeout_s: float, wall_timeout_s: float, env: dict[str, str]) -> float | None:
    """The container's duration (for windows planned over the source), through the relay like every read."""
    cmd = [
        "ffprobe",
        "-v",
        "error",
        "-protocol_whitelist",
        PROTOCOLS_REMOTE,
        "-rw_timeout",
        str(int(rw_timeout_s * 1e6)),
        "-show_entries",
        "format=duration",
        "-of",
        "default=noprint_wrappers=1:nokey=1",
        url,
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=wall_timeout_s, env=env, check=False)
    except subprocess.TimeoutExpired:
        return None
    try:
        return float(proc.stdout.decode().strip())
    except ValueError:
        return None
