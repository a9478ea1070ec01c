"""Reading image-music pair datasets (``mipkit build mipnet`` output) for HG-CLIM.

* Images: decoded with PIL from the stored bytes and preprocessed with timm's eval transform built
  from the image encoder's data config (input size, interpolation, crop, mean/std), so the
  preprocessing always matches the encoder that is loaded.
* Audio: the FLAC/WAV bytes are decoded with soundfile (no torchcodec), mixed to mono, resampled to
  32 kHz if needed, and padded / trimmed to exactly 320,000 samples (10 s).
* Labels: the ``emotion`` ClassLabel; missing labels become -1 (unlabelled).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from mipkit.core.errors import MipkitError

EMOTIONS = ("happy", "funny", "sad", "tender", "exciting", "angry", "scary")


class DatasetError(MipkitError):
    """The dataset cannot be read (printed as one line by the CLI)."""


def dataset_display_name(spec: str) -> str:
    """A name safe to publish: the folder name of a local dataset, or the Hub id."""
    p = Path(spec)
    return p.name if p.exists() else spec


def load_pair_dataset(spec: str):
    """``datasets.load_from_disk`` for a local folder, ``datasets.load_dataset`` for a Hub id."""
    import datasets

    p = Path(spec)
    if p.exists():
        if not (p / "dataset_dict.json").is_file():
            raise DatasetError(
                f"--dataset: '{p.name}' is not a saved dataset (no dataset_dict.json); "
                "pass the output folder of `mipkit build mipnet`"
            )
        return datasets.load_from_disk(str(p))
    if spec.count("/") == 1 and not spec.startswith((".", "/")):
        try:
            return datasets.load_dataset(spec)
        except Exception as e:  # noqa: BLE001 - offline or unknown id: one line
            raise DatasetError(
                f"--dataset: cannot load Hub dataset '{spec}' ({type(e).__name__}); "
                "pass a local folder built by `mipkit build mipnet`"
            ) from None
    raise DatasetError(
        f"--dataset: '{p.name}' not found; pass a folder built by `mipkit build mipnet` or a Hub id (owner/name)"
    )


def get_split(dataset_dict, split: str, flag: str = "--dataset"):
    if split not in dataset_dict:
        raise DatasetError(f"{flag}: the dataset has no split '{split}' (it has {', '.join(dataset_dict)})")
    return dataset_dict[split]


def fingerprint(split_ds) -> str:
    """Identity of a split's content: the datasets fingerprint plus the row count."""
    fp = getattr(split_ds, "_fingerprint", None) or "unknown"
    return f"{fp}:{len(split_ds)}"


def labels_of(split_ds) -> torch.Tensor:
    """Emotion labels as int64 with -1 for unlabelled rows (None or negative)."""
    if "emotion" not in split_ds.column_names:
        return torch.full((len(split_ds),), -1, dtype=torch.long)
    values = split_ds["emotion"]
    return torch.tensor([-1 if v is None or v < 0 else int(v) for v in values], dtype=torch.long)


def emotion_names(split_ds) -> list[str]:
    feature = split_ds.features.get("emotion")
    return list(getattr(feature, "names", EMOTIONS))


def _bytes_of(entry) -> bytes:
    if entry is None:
        raise DatasetError("a row has no media (image or audio is empty); rebuild the dataset")
    data = entry.get("bytes")
    if data is None:
        path = entry.get("path")
        if not path or not Path(path).is_file():
            raise DatasetError("a media entry has neither bytes nor a readable file; rebuild the dataset")
        data = Path(path).read_bytes()
    return data


def decode_audio(entry, sample_rate: int = 32_000, n_samples: int = 320_000) -> np.ndarray:
    """FLAC/WAV bytes -> float32 mono ``[n_samples]`` at ``sample_rate`` (pad with zeros / trim)."""
    import soundfile as sf

    audio, sr = sf.read(io.BytesIO(_bytes_of(entry)), dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if sr != sample_rate:
        import torchaudio.functional as AF

        audio = AF.resample(torch.from_numpy(audio), sr, sample_rate).numpy()
    if audio.shape[0] >= n_samples:
        return np.ascontiguousarray(audio[:n_samples])
    return np.pad(audio, (0, n_samples - audio.shape[0]))


def decode_image(entry):
    from PIL import Image

    return Image.open(io.BytesIO(_bytes_of(entry))).convert("RGB")


def image_transform(data_config: dict):
    """timm's eval transform for the encoder's data config."""
    import timm.data

    cfg = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data_config.items()}
    keys = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
    return timm.data.create_transform(**{k: cfg[k] for k in keys if k in cfg}, is_training=False)


class PairDataset(Dataset):
    """Rows of one split as ``{"index", "image" [3,H,W], "audio" [n_samples], "label"}``.

    Media columns are read undecoded (``decode=False``) and decoded here, so datasets never goes
    through torchcodec.
    """

    def __init__(self, split_ds, data_config: dict, sample_rate: int = 32_000, n_samples: int = 320_000):
        import datasets

        ds = split_ds
        if "image" in ds.column_names:
            ds = ds.cast_column("image", datasets.Image(decode=False))
        if "audio" in ds.column_names:
            ds = ds.cast_column("audio", datasets.Audio(decode=False))
        missing = [c for c in ("image", "audio") if c not in ds.column_names]
        if missing:
            raise DatasetError(
                f"--dataset: the split lacks column(s) {', '.join(missing)}; "
                "pass a dataset built by `mipkit build mipnet`"
            )
        self.ds = ds.select_columns(["image", "audio"])
        self.labels = labels_of(split_ds)
        self.transform = image_transform(data_config)
        self.sample_rate, self.n_samples = sample_rate, n_samples

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int) -> dict:
        row = self.ds[int(index)]
        return {
            "index": int(index),
            "image": self.transform(decode_image(row["image"])),
            "audio": torch.from_numpy(decode_audio(row["audio"], self.sample_rate, self.n_samples)),
            "label": int(self.labels[int(index)]),
        }
