"""Emotion labels without a hand-labelled manifest.

* ``PasstMoodLabeller``: PaSST's AudioSet head restricted to the seven music-mood logits (indices
  from the taxonomy file), softmax over those seven, argmax kept when it clears a threshold.
* ``mipkit.labelling.relabel.label_dataset`` relabels a dataset with it; ``mipkit.labelling.tasks`` cuts
  that work into tasks for the build engines.
Mapping tables between label sets live in ``mipkit.config.mapping``.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mipkit.config.taxonomy import load_taxonomy
from mipkit.core.devices import resolve_device
from mipkit.core.errors import MipkitError

MUSIC_MODELS = ("passt",)
PRESETS = ("full", "tiny")
SAMPLE_RATE = 32_000
CLIP_SAMPLES = 320_000


# ---------------------------------------------------------------------------- the labeller
@dataclass
class PasstMoodLabeller:
    """Waveforms ``[B, 320000]`` at 32 kHz -> probabilities over the taxonomy's moods ``[B, C]``."""

    encoder: object  # baselines.models.encoders.MusicEncoder: mel front-end + PaSST
    provenance: str  # the emotion_source written with its labels
    class_names: list[str]
    audioset_indices: list[int]
    device: object
    batch_size: int = 16
    details: dict = field(default_factory=dict)
    spec: dict = field(default_factory=dict)  # the make_labeller arguments: how a worker builds the same one

    def probabilities(self, audio: np.ndarray) -> np.ndarray:
        import warnings

        import torch

        x = torch.as_tensor(np.asarray(audio, dtype=np.float32), device=self.device)
        with torch.inference_mode(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # hear21passt's stft/autocast deprecation notices
            specs = self.encoder.mel(x).unsqueeze(1)  # the mel front-end stays in float32
            with torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.device.type == "cuda"):
                logits, _ = self.encoder.net(specs)
            moods = logits.float()[:, self.audioset_indices]
            return moods.softmax(dim=-1).cpu().numpy()


def make_labeller(
    music_model: str = "passt",
    weights: str | Path | None = None,
    preset: str = "full",
    allow_random_weights: bool = False,
    device: str = "auto",
    batch_size: int = 16,
    seed: int = 0,
    taxonomy: str = "audioset_moods",
) -> PasstMoodLabeller:
    """Build the labeller; random weights (``--preset tiny`` or no ``--weights``) only when allowed."""
    import torch

    if music_model not in MUSIC_MODELS:
        raise MipkitError(f"--music-model {music_model!r} is unknown; choose one of {', '.join(MUSIC_MODELS)}")
    if preset not in PRESETS:
        raise MipkitError(f"--preset {preset!r} is unknown; choose one of {', '.join(PRESETS)}")
    if batch_size < 1:
        raise MipkitError("--batch-size must be >= 1")
    if (preset == "tiny" or weights is None) and not allow_random_weights:
        what = (
            "--preset tiny is a random test model"
            if preset == "tiny"
            else "without --weights the model has random weights"
        )
        raise MipkitError(
            f"{what}, so its labels would be noise; pass --weights FILE (a PaSST AudioSet checkpoint), or --allow-random-weights for tests"
        )
    moods = load_taxonomy(taxonomy)
    indices = [c.audioset_index for c in moods.classes]
    if any(i is None or not 0 <= i < 527 for i in indices):
        raise MipkitError(
            f"taxonomy {moods.name!r} lacks audioset_index for some classes; PaSST labels only AudioSet classes"
        )
    from baselines.api import build_passt_encoder, weights_error

    weights_path = Path(weights) if weights is not None else None
    if weights_path is not None and not weights_path.is_file():
        raise MipkitError(
            f"--weights file {weights_path.name!r} not found; pass a local PaSST checkpoint (nothing is downloaded)"
        )
    torch.manual_seed(seed)  # the random (test) models are reproducible
    try:
        encoder = build_passt_encoder(preset, seed, weights_path)
    except weights_error() as exc:
        raise MipkitError(str(exc).replace("--music-weights", "--weights")) from None
    resolved = resolve_device(device)
    encoder = encoder.to(resolved).eval()  # eval: no mel jitter/masking, no patchout
    model = "passt-tiny" if preset == "tiny" else "passt"
    weights_id = encoder.weights_id  # "sha256:<hex>" or "random:<seed>"
    tag = weights_id.split(":", 1)[1][:12] if weights_id.startswith("sha256:") else f"random-seed{seed}"
    details = {
        "model": model,
        "arch": encoder.name,
        "weights": weights_path.name if weights_path else None,
        "weights_id": weights_id,
        "device": str(resolved),
        "autocast": "bf16" if resolved.type == "cuda" else "none",
    }
    spec = {
        "music_model": music_model,
        "weights": str(weights_path) if weights_path else None,
        "preset": preset,
        "allow_random_weights": allow_random_weights,
        "device": device,
        "batch_size": batch_size,
        "seed": seed,
        "taxonomy": taxonomy,
    }
    return PasstMoodLabeller(encoder, f"{model}:{tag}", moods.names, indices, resolved, batch_size, details, spec)


def decode_clip(data: bytes, sample_rate: int = SAMPLE_RATE, n_samples: int = CLIP_SAMPLES) -> np.ndarray:
    """FLAC/WAV bytes -> mono float32 ``[n_samples]`` (soundfile, not torchcodec; pad or trim)."""
    import soundfile as sf

    audio, rate = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    audio = audio.mean(axis=1)
    if rate != sample_rate:
        import torch
        import torchaudio.functional as AF

        audio = AF.resample(torch.from_numpy(audio), rate, sample_rate).numpy()
    return (
        np.ascontiguousarray(audio[:n_samples])
        if len(audio) >= n_samples
        else np.pad(audio, (0, n_samples - len(audio)))
    )


def distribution_table(summary: dict):
    """Rich table: pairs per label (rows) and split (columns)."""
    from rich.table import Table

    distribution = summary["distribution"]
    labels = list(dict.fromkeys(label for counts in distribution.values() for label in counts))
    labels = sorted(labels, key=lambda name: (name == "unlabelled", name))
    table = Table(title=f"labels after {summary['emotion_source']} (threshold {summary['threshold']:g})")
    table.add_column("emotion")
    for split in distribution:
        table.add_column(split, justify="right")
    table.add_column("total", justify="right")
    for label in labels:
        row = [distribution[split].get(label, 0) for split in distribution]
        table.add_row(label, *map(str, row), str(sum(row)))
    return table
