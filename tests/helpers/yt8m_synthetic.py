"""A small synthetic YouTube-8M music-video dataset with the columns of `mipkit build yt8m-title`.

Each video belongs to one of ``clusters`` latent "styles": its rgb and audio frames are two fixed
random nonlinear views of the style latent plus per-video and per-frame noise, quantised to uint8,
and its title / keywords name the style. So video and music of a pair belong together in a way a
sequence encoder can learn, and durations vary (some shorter than the default K = 30).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

WORDS = ["amber", "blue", "coral", "dune", "ember", "fjord", "glow", "haze", "iris", "jade", "koi", "lime"]


def _frames(latent: np.ndarray, proj: np.ndarray, seconds: int, rng: np.random.Generator) -> np.ndarray:
    base = np.tanh(latent @ proj)  # [D]
    drift = rng.normal(0, 0.3, (seconds, proj.shape[1]))
    x = base[None, :] * 1.5 + drift  # roughly within [-2, 2]
    return np.clip(np.round((x + 2) * 255 / 4), 0, 255).astype(np.uint8)


def make_yt8m_dataset(
    out: Path,
    n_train: int = 48,
    n_val: int = 16,
    n_test: int = 16,
    seed: int = 0,
    clusters: int = 8,
    min_seconds: int = 3,
    max_seconds: int = 45,
):
    """Write a ``DatasetDict`` (train / validation / test; empty splits left out) and return it."""
    from datasets import Dataset, DatasetDict

    from mipkit.kinds.yt8m.tfrecords import dataset_features

    rng = np.random.default_rng(seed)
    dim_z = 12
    centres = rng.normal(0, 1, (clusters, dim_z))
    proj_v, proj_a = rng.normal(0, 0.6, (dim_z, 1024)), rng.normal(0, 0.6, (dim_z, 128))
    splits = {}
    counter = 0
    for split, n in (("train", n_train), ("validation", n_val), ("test", n_test)):
        rows = {k: [] for k in dataset_features()}
        for _ in range(n):
            c = int(rng.integers(clusters))
            latent = centres[c] + rng.normal(0, 0.35, dim_z)
            seconds = int(rng.integers(min_seconds, max_seconds + 1))
            word = WORDS[c % len(WORDS)]
            rows["video_id"].append(f"v{counter:04d}")
            rows["youtube_id"].append(f"yt{counter:09d}")
            rows["labels"].append([14])
            rows["rgb"].append(_frames(latent, proj_v, seconds, rng))
            rows["audio"].append(_frames(latent, proj_a, seconds, rng))
            rows["num_seconds"].append(seconds)
            rows["title"].append(f"{word} song number {counter}")
            rows["keywords"].append([word, f"k{counter % 3}"])
            rows["split"].append(split)
            counter += 1
        if n:
            splits[split] = Dataset.from_dict(rows, features=dataset_features())
    dd = DatasetDict(splits)
    dd.save_to_disk(str(out))
    return dd
