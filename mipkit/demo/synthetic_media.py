"""Generated media whose content encodes time: for the offline demo, the tests and the benchmarks.

Audio is a linear chirp, so any 10-s window has a unique waveform (a wrong start time shows up as a
collapsed correlation). Video luma rises with time (``luma = LUMA_PER_S * t``), so a frame's
brightness tells when it was taken; chroma and base pitch differ per source.

Demo sources (:func:`demo_spec_for_index`) are cut into *scenes* instead: each scene's hidden factor
(a hue and a pattern) drives the picture (colour, number of stripes) and the music together (pitch;
beats per second and number of harmonics), so the image and the clip of one window belong together
and differ from every other window: a pairing the demo's tiny model can learn.
"""

from __future__ import annotations

import colorsys
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
class Scene:
    """A stretch of a demo source from ``start_s`` on, with the hidden factor picture and music share."""

    start_s: float
    hue: float  # 0..1: colour of the picture, pitch of the music
    pattern: int  # 1..4: stripes in the picture, beats per second and harmonics in the music

    @property
    def rgb(self) -> tuple[int, int, int]:
        return tuple(int(round(255 * c)) for c in colorsys.hsv_to_rgb(self.hue, 0.85, 0.95))

    @property
    def frequency(self) -> float:
        return 110.0 * 2 ** (2 * self.hue)  # two octaves, 110..440 Hz

    @property
    def harmonics(self) -> int:
        # Many harmonics: their spacing shows the pitch even to a small random PaSST, which mostly sees
        # which spectro-temporal patches are lit, not where they are; their count is the timbre.
        return 2 + 2 * self.pattern

    def music(self, t: np.ndarray, amplitude: float) -> np.ndarray:
        """This scene's music at times ``t``: ``harmonics`` partials of ``frequency``, ``pattern`` beats per second."""
        weights = 1.0 / np.arange(1, self.harmonics + 1)
        tone = sum(w * np.sin(2 * np.pi * (h + 1) * self.frequency * t) for h, w in enumerate(weights)) / weights.sum()
        return amplitude * (0.55 + 0.45 * np.sin(2 * np.pi * self.pattern * t)) * tone


@dataclass(frozen=True)
class SourceSpec:
    """What a generated source contains; ``expected_audio`` recomputes any window of it."""

    seconds: float
    f0: float = 220.0  # chirp start frequency (Hz)
    sweep: float = 6.0  # Hz per second
    cb: int = 128  # chroma of the picture (per-source colour)
    cr: int = 128
    amplitude: float = 0.5
    scenes: tuple[Scene, ...] = ()  # demo sources: scene colours and tones replace the luma ramp and the chirp

    def scene_at(self, at_s: float) -> Scene:
        return [scene for scene in self.scenes if scene.start_s <= at_s][-1]

    def expected_audio(self, start_s: float, seconds: float, sample_rate: int) -> np.ndarray:
        t = start_s + np.arange(int(round(seconds * sample_rate))) / sample_rate
        if self.scenes:
            out = np.zeros_like(t)
            for scene in self.scenes:
                playing = t >= scene.start_s
                out[playing] = scene.music(t[playing], self.amplitude)
            return out.astype(np.float32)
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


def demo_spec_for_index(
    index: int, seconds: float, scene_starts: tuple[float, ...] = (0.0, 13.0, 26.0, 39.0)
) -> SourceSpec:
    """A demo source: its scenes' hues walk the colour circle by the golden ratio, so that every window of
    every source gets its own colour (and pitch), and the patterns cycle through 1..4."""
    scenes = []
    for k, start in enumerate(scene_starts):
        window = index * len(scene_starts) + k
        scenes.append(Scene(start_s=start, hue=(window * 0.618034) % 1.0, pattern=1 + (window * 3 + index) % 4))
    return SourceSpec(seconds=seconds, scenes=tuple(scenes))


def _scene_filter(spec: SourceSpec) -> str:
    """The video filter of a source cut into scenes: striped colour pictures.

    The pictures are filled boxes switched on per scene, and the music is rendered by numpy: a
    per-pixel ``geq`` and an ``aevalsrc`` of ten partials took minutes for the demo's sources."""
    boxes = []
    ends = [scene.start_s for scene in spec.scenes[1:]] + [spec.seconds + 1]
    for scene, end in zip(spec.scenes, ends):
        enable = f"enable='gte(t,{scene.start_s})*lt(t,{end})'"
        bright = "0x{:02x}{:02x}{:02x}".format(*scene.rgb)
        dark = "0x{:02x}{:02x}{:02x}".format(*(int(0.3 * (255 - c)) for c in scene.rgb))
        boxes.append(f"drawbox=x=0:y=0:w=iw:h=ih:color={bright}:t=fill:{enable}")
        bands = 2 * scene.pattern
        for band in range(1, bands, 2):
            boxes.append(f"drawbox=x=0:y=ih*{band}/{bands}:w=iw:h=ih/{bands}+1:color={dark}:t=fill:{enable}")
    return ",".join(boxes + ["format=yuv420p"])


# Codecs per container: what real hosts serve (mp4/mkv H.264 + AAC, webm VP9 + Opus, ogg/m4a audio only).
_CODECS = {
    ".mp4": ["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-b:a", "128k"],
    ".mkv": ["-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-b:a", "128k"],
    ".webm": ["-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "300k", "-c:a", "libopus"],
    ".ogg": ["-vn", "-c:a", "libvorbis"],
    ".m4a": ["-vn", "-c:a", "aac", "-b:a", "128k"],
}


def make_video(
    path: str | Path,
    spec: SourceSpec,
    size: str = "160x120",
    fps: int = 10,
    gop: int = 20,
    faststart: bool = True,
    noise: int = 0,
    video_kbps: int = 0,
) -> Path:
    """Write a source in the container named by the suffix (default H.264 + AAC mp4, moov atom first,
    so readers can seek over HTTP).

    A time-ramp picture larger than 160x120 is drawn at 160x120 and scaled (the per-pixel expression is
    slow); ``noise`` adds temporal grain so that a large picture costs what a real one does to encode and
    decode; ``faststart=False`` leaves an mp4's moov atom at the end.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    luma = f"min(255,{LUMA_BASE}+{LUMA_PER_S}*T)"
    chirp = f"{spec.amplitude}*sin(2*PI*({spec.f0}*t+{spec.sweep}*t*t/2))"
    canvas = size
    video_filter = f"format=yuv420p,geq=lum='{luma}':cb={spec.cb}:cr={spec.cr}"
    if size != "160x120":
        canvas = "160x120"
        video_filter += f",scale={size.replace('x', ':')}"
    audio_input = ["-f", "lavfi", "-i", f"aevalsrc=exprs={chirp}:s=44100:d={spec.seconds}"]
    if spec.scenes:
        import soundfile as sf

        canvas = size
        video_filter = _scene_filter(spec)
        wav = path.with_name(path.name + ".wav")
        sf.write(wav, spec.expected_audio(0.0, spec.seconds, 44100), 44100, subtype="FLOAT")
        audio_input = ["-i", str(wav)]
    if noise:
        video_filter += f",noise=alls={noise}:allf=t"
    codecs = list(_CODECS[path.suffix.lower()])
    cmd = [
        "ffmpeg",
        "-nostdin",
        "-v",
        "error",
        "-y",
        "-f",
        "lavfi",
        "-i",
        f"color=c=black:s={canvas}:r={fps}:d={spec.seconds}",
    ]
    cmd += audio_input
    if "-vn" in codecs:
        cmd += codecs
    else:
        cmd += ["-vf", video_filter, *codecs, "-g", str(gop), "-pix_fmt", "yuv420p"]
        if video_kbps:
            cmd += ["-b:v", f"{video_kbps}k"]
    if path.suffix.lower() in (".mp4", ".m4a") and faststart:
        cmd += ["-movflags", "+faststart"]
    cmd += ["-shortest", str(path)]
    try:
        subprocess.run(cmd, check=True)
    finally:
        if spec.scenes:
            wav.unlink(missing_ok=True)
    return path


def make_corrupt(path: str | Path, size: int = 200_000, seed: int = 0) -> Path:
    """Random bytes with an .mp4 name: a file every decoder rejects."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(np.random.default_rng(seed).bytes(size))
    return path
