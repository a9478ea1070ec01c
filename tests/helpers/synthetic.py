"""A small synthetic image-music pair dataset with the columns of `mipkit build mipnet`'s output.

Each pair has a latent ``(hue, pattern)``: the image is a picture of that hue with ``pattern``-many
stripes, the music is a tone whose pitch follows the hue and whose amplitude-modulation rate follows
the pattern. So image and music of a pair belong together in a way even random frozen encoders can
see, and a projection head can learn it (the toy learning test). The emotion label is a function of
the hue (a coarse grouping), ~10% of the rows are unlabelled.
"""

from __future__ import annotations

import colorsys
import io
from pathlib import Path

import numpy as np

EMOTIONS = ["happy", "funny", "sad", "tender", "exciting", "angry", "scary"]
SAMPLE_RATE = 32_000
SECONDS = 10.0


def _image_png(hue: float, pattern: float, rng: np.random.Generator, size=(64, 80)) -> bytes:
    from PIL import Image

    h, w = size
    colour = np.array(colorsys.hsv_to_rgb(hue, 0.9, 0.9)) * 255
    stripes = 1 + int(round(pattern * 6))
    rows = np.arange(h)[:, None]
    mask = ((rows * stripes // h) % 2 == 0).astype(np.float32)  # [h, 1]
    img = mask[..., None] * colour[None, None, :] + (1 - mask[..., None]) * (255 - colour[None, None, :]) * 0.3
    img = np.broadcast_to(img, (h, w, 3)) + rng.normal(0, 12, (h, w, 3))
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def _audio_flac(hue: float, pattern: float, rng: np.random.Generator) -> bytes:
    import soundfile as sf

    t = np.arange(int(SAMPLE_RATE * SECONDS)) / SAMPLE_RATE
    freq = 220.0 * 2 ** (3 * hue)
    rate = 0.5 + 4.0 * pattern
    envelope = 0.55 + 0.45 * np.sin(2 * np.pi * rate * t)
    wave = 0.4 * envelope * np.sin(2 * np.pi * freq * t + rng.uniform(0, 2 * np.pi))
    buf = io.BytesIO()
    sf.write(buf, wave.astype(np.float32), SAMPLE_RATE, format="FLAC")
    return buf.getvalue()


def make_pair_dataset(
    out_dir, n_train: int = 64, n_val: int = 16, n_test: int = 16, seed: int = 0, unlabelled_frac: float = 0.1
):
    """Write a ``DatasetDict`` (train/validation/test) with ``save_to_disk`` and return it."""
    import datasets

    rng = np.random.default_rng(seed)
    features = datasets.Features(
        {
            "pair_id": datasets.Value("string"),
            "image": datasets.Image(),
            # declared as its storage struct, cast to Audio afterwards: no torchcodec import for encoding
            "audio": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")},
            "emotion": datasets.ClassLabel(names=EMOTIONS),
            "emotion_source": datasets.Value("string"),
            "emotion_score": datasets.Value("float32"),
            "source_id": datasets.Value("string"),
            "source_url": datasets.Value("string"),
            "start_s": datasets.Value("float32"),
            "end_s": datasets.Value("float32"),
            "title": datasets.Value("string"),
            "uploader": datasets.Value("string"),
            "license": datasets.Value("string"),
            "split": datasets.Value("string"),
        }
    )
    splits = {}
    index = 0
    for split, n in (("train", n_train), ("validation", n_val), ("test", n_test)):
        rows = {name: [] for name in features}
        for _ in range(n):
            hue, pattern = float(rng.uniform()), float(rng.uniform())
            labelled = rng.uniform() >= unlabelled_frac
            source = f"synth{index // 2:05d}"
            start = float(10 * (index % 2))
            rows["pair_id"].append(f"{source}_{int(start):04d}")
            rows["image"].append({"bytes": _image_png(hue, pattern, rng), "path": None})
            rows["audio"].append({"bytes": _audio_flac(hue, pattern, rng), "path": None})
            rows["emotion"].append(min(int(hue * 7), 6) if labelled else None)
            rows["emotion_source"].append("synthetic" if labelled else None)
            rows["emotion_score"].append(1.0 if labelled else None)
            rows["source_id"].append(source)
            rows["source_url"].append(f"http://127.0.0.1/{source}.mp4")
            rows["start_s"].append(start)
            rows["end_s"].append(start + SECONDS)
            rows["title"].append(f"synthetic source {source}")
            rows["uploader"].append("mipkit-tests")
            rows["license"].append("CC0-1.0")
            rows["split"].append(split)
            index += 1
        ds = datasets.Dataset.from_dict(rows, features=features)
        splits[split] = ds.cast_column("audio", datasets.Audio(sampling_rate=SAMPLE_RATE))
    dd = datasets.DatasetDict(splits)
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    dd.save_to_disk(str(out_dir))
    return datasets.load_from_disk(str(out_dir))


def _scene_png(scene, size=(96, 128)) -> bytes:
    """The demo's picture of a scene: ``2 * pattern`` horizontal bands, bright in the scene's colour and dark."""
    from PIL import Image

    h, w = size
    bright = np.array(scene.rgb, dtype=np.float32)
    dark = 0.3 * (255 - bright)
    band = (np.arange(h) * 2 * scene.pattern // h) % 2
    img = np.where(band[:, None, None] == 1, dark, bright) * np.ones((h, w, 1), dtype=np.float32)
    buf = io.BytesIO()
    Image.fromarray(img.astype(np.uint8)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def make_scene_dataset(out_dir, n_train: int = 36, n_val: int = 8, n_test: int = 20):
    """A pair dataset made of the demo's scenes (``mipkit.synthetic_media.demo_spec_for_index``) without a build:
    the image and the clip of a pair share the scene's hue and pattern, as in ``bash scripts/demo.sh``."""
    import datasets
    import soundfile as sf

    from mipkit.demo.synthetic_media import demo_spec_for_index

    windows = [
        scene
        for index in range(-(-(n_train + n_val + n_test) // 4))
        for scene in demo_spec_for_index(index, 52.0).scenes
    ]
    t = np.arange(int(SAMPLE_RATE * SECONDS)) / SAMPLE_RATE
    splits, start = {}, 0
    for split, n in (("train", n_train), ("validation", n_val), ("test", n_test)):
        rows = {
            k: [] for k in ("pair_id", "image", "audio", "emotion", "source_url", "start_s", "end_s", "title", "split")
        }
        for i, scene in enumerate(windows[start : start + n], start):
            audio = io.BytesIO()
            sf.write(audio, scene.music(t, 0.5).astype(np.float32), SAMPLE_RATE, format="FLAC")
            rows["pair_id"].append(f"scene{i:04d}")
            rows["image"].append({"bytes": _scene_png(scene), "path": None})
            rows["audio"].append({"bytes": audio.getvalue(), "path": None})
            rows["emotion"].append(min(int(scene.hue * 7), 6))
            rows["source_url"].append(f"http://127.0.0.1/scene{i // 4:03d}.mp4")
            rows["start_s"].append(float(scene.start_s + 1.5))
            rows["end_s"].append(float(scene.start_s + 11.5))
            rows["title"].append(f"scene {i}: hue {scene.hue:.2f}, pattern {scene.pattern}")
            rows["split"].append(split)
        start += n
        features = datasets.Features(
            {
                "pair_id": datasets.Value("string"),
                "image": datasets.Image(),
                "audio": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")},
                "emotion": datasets.ClassLabel(names=EMOTIONS),
                "source_url": datasets.Value("string"),
                "start_s": datasets.Value("float32"),
                "end_s": datasets.Value("float32"),
                "title": datasets.Value("string"),
                "split": datasets.Value("string"),
            }
        )
        ds = datasets.Dataset.from_dict(rows, features=features)
        splits[split] = ds.cast_column("audio", datasets.Audio(sampling_rate=SAMPLE_RATE))
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    datasets.DatasetDict(splits).save_to_disk(str(out_dir))
    return datasets.load_from_disk(str(out_dir))
