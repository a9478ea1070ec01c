"""A small saved dataset with the columns `mipkit build` writes, some pairs labelled by a manifest."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import soundfile as sf

from mipkit.config.taxonomy import load_taxonomy

MOODS = load_taxonomy("audioset_moods").names
# (split, emotion_source, emotion): three rows carry manifest labels, the rest come unlabelled
ROWS = [
    ("train", "manifest", "sad"),
    ("train", None, None),
    ("train", None, None),
    ("train", "manifest", "angry"),
    ("train", None, None),
    ("train", "passt:oldweights00", "happy"),
    ("validation", None, None),
    ("validation", "manifest", "tender"),
    ("test", None, None),
    ("test", None, None),
]


def flac(seconds: float, f0: float, rate: int = 32000) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    buffer = io.BytesIO()
    sf.write(buffer, (0.4 * np.sin(2 * np.pi * (f0 * t + 30 * t * t))).astype(np.float32), rate, format="FLAC")
    return buffer.getvalue()


def make_built_dataset(out: Path, num_shards: dict[str, int] | None = None) -> Path:
    """A dataset with the columns `mipkit build` writes (no image), plus a build/ folder; ``num_shards``:
    Arrow files per split (save_to_disk's)."""
    import datasets

    from mipkit.config.recipe import load_recipe
    from mipkit.pipeline.assemble import dataset_features

    features = dataset_features(load_recipe("audioset-mood"), load_taxonomy("audioset_moods"))
    storage = datasets.Features(
        {**features, "audio": {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}}
    )
    splits = {}
    for split in ("train", "validation", "test"):
        rows = {name: [] for name in features}
        for index, (row_split, source, emotion) in enumerate(ROWS):
            if row_split != split:
                continue
            rate = 16000 if index == 4 else 32000  # one clip at another rate: resampled on decode
            values = {
                "pair_id": f"src{index}_00000000",
                "audio": {"bytes": flac(10.0 if index != 2 else 7.5, 150 + 40 * index, rate), "path": None},
                "emotion": MOODS.index(emotion) if emotion else None,
                "emotion_source": source,
                "emotion_score": 0.9 if source and source.startswith("passt") else None,
                "source_id": f"src{index}",
                "source_url": f"http://127.0.0.1/src{index}.mp4",
                "start_s": 0.0,
                "end_s": 10.0,
                "title": "t",
                "uploader": "u",
                "license": "CC0-1.0",
                "split": split,
            }
            for name in features:
                rows[name].append(values[name])
        splits[split] = datasets.Dataset.from_dict(rows, features=storage).cast_column("audio", features["audio"])
    datasets.DatasetDict(splits).save_to_disk(str(out), num_shards=num_shards)
    (out / "build").mkdir()
    (out / "build" / "build.json").write_text('{"kind": "test"}')
    return out
