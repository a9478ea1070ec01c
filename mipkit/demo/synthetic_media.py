"""Generated media whose content encodes time: for the offline demo, the tests and the benchmarks.

Audio is a linear chirp, so any 10-s window has a unique waveform (a wrong start time shows up as a
collapsed correlation). Video luma rises with time (``luma = LUMA_PER_S * t``), so a frame's
brightness tells when it was taken; chroma and base pitch differ per source, so image and music of
one source belong together (a learnable pairing for the demo training).
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Luma and chroma stay inside the RGB gamut for the first 40 s (no clipping), so a frame's grey
# level maps back to its time; past that the picture saturates.
LUMA_BASE = 48.0
LUMA_PER_S = 4.0
CHROMA = 16


@dataclass(frozen=True)
class SourceSpec:
    """What a generated source contains; ``expected_audio`` recomputes any window of it."""

    seconds: float
    f0: float = 220.0  # chirp start frequency (Hz)
    sweep: float = 6.0  # Hz per second
    cb: int = 128  # chroma of the picture (per-source colour)
    cr: int = 128
    amplitude: float = 0.5

    def expected_audio(self, start_s: float, seconds: float, sample_rate: int) -> np.ndarray:
        t = start_s + np.arange(int(round(seconds * sample_rate))) / sample_rate
        return (self.amplitude * np.sin(2 * np.pi * (self.f0 * t + self.sweep * t * t / 2))).astype(np.float32)

    def expected_luma(self, at_s: float) -> float:
        """Video luma (limited range, 16..235) at ``at_s``."""
        return min(235.0, LUMA_BASE + LUMA_PER_S * at_s)

    def expected_gray(self, at_s: float) -> float:
        """Grey level of the decoded RGB frame at ``at_s`` (limited range expanded to 0..255)."""
        return (self.expected_luma(at_s) - 16.0) * 255.0 / 219.0


def spec_for_index(index: int, seconds: float) -> SourceSpec:
    """Distinct, reproducible parameters for the index-th generated source."""
    rng = np.random.default_rng(index)
    angle = 2 * np.pi * ((index * 0.618034) % 1.0)
    return SourceSpec(
        seconds=seconds,
        f0=float(180 + 40 * (index % 9) + rng.uniform(0, 20)),
        cb=int(128 + CHROMA * np.cos(angle)),
        cr=int(128 + CHROMA * np.sin(angle)),
    )


def make_video(path: str | Path, spec: SourceSpec, size: str = "160x120", fps: int = 10, gop: int = 20) -> Path:
    """Write an H.264 + AAC mp4 (moov atom first, so readers can seek over HTTP)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    luma = f"min(255,{LUMA_BASE}+{LUMA_PER_S}*T)"
    chirp = f"{spec.amplitude}*sin(2*PI*({spec.f0}*t+{spec.sweep}*t*t/2))"
    cmd = [
        "ffmpeg",
        "-nostdin",
        "-v",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"color=c=black:s={size}:r={fps}:d={spec.seconds}",
        "-f",
        "lavfi",
        "-i",
        f"aevalsrc=exprs={chirp}:s=44100:d={spec.seconds}",
        "-vf",
        f"format=yuv420p,geq=lum='{luma}':cb={spec.cb}:cr={spec.cr}",
        "-c:v",
        "libx264",
        "-preset",
        "ultrafast",
        "-g",
        str(gop),
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        "-b:a",
        "128k",
        "-movflags",
        "+faststart",
        "-shortest",
        str(path),
    ]
    subprocess.run(cmd, check=True)
    return path


def make_corrupt(path: str | Path, size: int = 200_000, seed: int = 0) -> Path:
    """Random bytes with an .mp4 name: a file every decoder rejects."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(seed).bytes(size))
    return path
