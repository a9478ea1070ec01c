"""Model library of the mipkit baselines (separate from the training loop in ``baselines.train``)."""

from baselines.models.encoders import CLIP_SAMPLES, SAMPLE_RATE, ImageEncoder, ModelConfig, MusicEncoder, WeightsError
from baselines.models.hgclim import HGCLIM, ProjectionHead, build_model

__all__ = [
    "CLIP_SAMPLES",
    "HGCLIM",
    "SAMPLE_RATE",
    "ImageEncoder",
    "ModelConfig",
    "MusicEncoder",
    "ProjectionHead",
    "WeightsError",
    "build_model",
]
