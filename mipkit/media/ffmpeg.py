"""ffmpeg-backed media operations: probe, decode an exact clip, grab a frame, encode FLAC.

Every call passes an argument list to ``subprocess`` (never a shell), so URLs and file names from
manifests cannot inject commands.
"""

from __future__ import annotations

import io
import json
import shutil
import subprocess

import numpy as np
import soundfile as sf
from PIL import Image

from mipkit.core.errors import MipkitError


class MediaError(Exception):
    """Media could not be decoded (corrupt file, missing stream)."""


def require_ffmpeg() -> str:
    """Path of ffmpeg, or a one-line error that says how to install it."""
    path = shutil.which("ffmpeg")
    if not path or not shutil.which("ffprobe"):
        raise MipkitError("ffmpeg/ffprobe not found on PATH; install them (Debian/Ubuntu: apt-get install ffmpeg)")
    return path


def _last_line(stderr: bytes) -> str:
    lines = [line.strip() for line in stderr.decode("utf-8", "replace").splitlines() if line.strip()]
    return lines[-1] if lines else "no message"


def probe(source: str, headers: dict[str, str] | None = None, timeout: float = 60.0) -> dict:
    """ffprobe's format and streams of a local file or URL."""
    cmd = ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams"]
    if headers:
        cmd += ["-headers", "".join(f"{k}: {v}\r\n" for k, v in headers.items())]
    cmd.append(source)
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise MediaError("ffprobe timed out reading the media") from None
    if proc.returncode != 0:
        raise MediaError(f"ffprobe could not read the media: {_last_line(proc.stderr)}")
    return json.loads(proc.stdout or b"{}")


def duration_of(probed: dict) -> float | None:
    value = probed.get("format", {}).get("duration")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def decode_audio(path: str, seconds: float, sample_rate: int, start_s: float = 0.0, channels: int = 1) -> np.ndarray:
    """Decode ``seconds`` of audio from ``start_s`` as float32 ``[samples]`` (mono) or ``[samples, ch]``."""
    cmd = ["ffmpeg", "-nostdin", "-v", "error"]
    if start_s > 0:
        cmd += ["-ss", f"{start_s:.6f}"]
    cmd += [
        "-i",
        path,
        "-t",
        f"{seconds:.6f}",
        "-vn",
        "-ac",
        str(channels),
        "-ar",
        str(sample_rate),
        "-f",
        "f32le",
        "-acodec",
        "pcm_f32le",
        "pipe:1",
    ]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0:
        raise MediaError(f"ffmpeg could not decode the audio: {_last_line(proc.stderr)}")
    pcm = np.frombuffer(proc.stdout, dtype="<f4")
    if pcm.size == 0:
        raise MediaError("the media has no decodable audio stream")
    return pcm.reshape(-1, channels) if channels > 1 else pcm


def fit_length(pcm: np.ndarray, samples: int, max_short_fraction: float) -> np.ndarray | None:
    """Trim to exactly ``samples``; pad a shortfall up to ``max_short_fraction``; None if shorter."""
    if len(pcm) >= samples:
        return pcm[:samples]
    if samples - len(pcm) > max_short_fraction * samples:
        return None
    pad = [(0, samples - len(pcm))] + [(0, 0)] * (pcm.ndim - 1)
    return np.pad(pcm, pad)


def encode_flac(pcm: np.ndarray, sample_rate: int) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(pcm, -1.0, 1.0), sample_rate, format="FLAC", subtype="PCM_16")
    return buffer.getvalue()


def extract_frame(path: str, at_s: float, max_side: int = 0, quality: int = 90) -> bytes:
    """The video frame shown at ``at_s`` (accurate seek), as JPEG bytes."""
    cmd = [
        "ffmpeg",
        "-nostdin",
        "-v",
        "error",
        "-ss",
        f"{max(at_s, 0.0):.6f}",
        "-i",
        path,
        "-frames:v",
        "1",
        "-an",
        "-f",
        "image2pipe",
        "-c:v",
        "png",
        "pipe:1",
    ]
    proc = subprocess.run(cmd, capture_output=True, check=False)
    if proc.returncode != 0 or not proc.stdout:
        reason = _last_line(proc.stderr) if proc.returncode != 0 else "no video frame at that time"
        raise MediaError(f"could not extract an image: {reason}")
    image = Image.open(io.BytesIO(proc.stdout)).convert("RGB")
    if max_side and max(image.size) > max_side:
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=quality)
    return out.getvalue()
