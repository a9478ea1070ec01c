"""HG-CLIM model: a frozen (or partly fine-tuned) image encoder and music encoder, each followed by
a projection head into a shared, L2-normalised embedding space.

* Image encoder: a timm ConvNeXt (default ``convnext_base``) built with ``num_classes=0`` so it
  returns pooled features.
* Music encoder: hear21passt's PaSST (``passt_s_swa_p16_128_ap476``) behind its mel front-end, giving
  the 768-d ``embed_only`` features (mean of the CLS and distillation tokens) for 10-s clips at 32 kHz.
* Projection head *(choice)*: Linear - BatchNorm - ReLU - Dropout - Linear, then L2 normalisation.

Weights come from local files only (``image_weights`` / ``music_weights``); nothing is downloaded.
The ``tiny`` preset builds small random encoders of the same two families so the whole training path
runs on a CPU in seconds. The model is independent of the training loop: ``baselines.train`` builds it
from a :class:`ModelConfig`.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from baselines.losses import LearnableTemperature
from baselines.models.encoders import (
    PRESETS,
    ImageEncoder,
    ModelConfig,
    MusicEncoder,
    WeightsError,
    _check_file,
    build_image_encoder,
    build_music_encoder,
)


# --------------------------------------------------------------------------------------------------
# Projection head and the model
# --------------------------------------------------------------------------------------------------
class ProjectionHead(nn.Module):
    """Linear - BatchNorm1d - ReLU - Dropout - Linear *(choice)*."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, dropout: float):
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(in_dim, hidden),
            nn.BatchNorm1d(hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(hidden, out_dim),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class HGCLIM(nn.Module):
    """Image and music encoders + projection heads + the learnable temperature.

    ``forward`` takes either raw inputs (``images`` ``[B,3,H,W]``, ``audio`` ``[B,320000]``) or
    cached encoder features (``raw_v``, ``raw_m``) and returns ``(v, m, raw_v, raw_m)``: ``v`` and
    ``m`` are the projected embeddings, L2-normalised in fp32; ``raw_*`` are the pre-projection
    encoder features (the "raw" features of the intra-modal loss).
    """

    def __init__(self, image_encoder: ImageEncoder, music_encoder: MusicEncoder, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.image_encoder = image_encoder
        self.music_encoder = music_encoder
        self.image_proj = ProjectionHead(image_encoder.out_dim, cfg.proj_hidden, cfg.embed_dim, cfg.dropout)
        self.music_proj = ProjectionHead(music_encoder.out_dim, cfg.proj_hidden, cfg.embed_dim, cfg.dropout)
        self.temperature = LearnableTemperature()
        self.set_finetune_last(cfg.finetune_last)

    def set_finetune_last(self, n: int) -> None:
        self.image_encoder.set_finetune_last(n)
        self.music_encoder.set_finetune_last(n)

    @property
    def encoders_frozen(self) -> bool:
        return self.image_encoder.frozen and self.music_encoder.frozen

    def encode(self, images: torch.Tensor | None = None, audio: torch.Tensor | None = None):
        raw_v = self.image_encoder(images) if images is not None else None
        raw_m = self.music_encoder(audio) if audio is not None else None
        return raw_v, raw_m

    def project(self, raw_v: torch.Tensor | None = None, raw_m: torch.Tensor | None = None):
        v = F.normalize(self.image_proj(raw_v).float(), dim=-1) if raw_v is not None else None
        m = F.normalize(self.music_proj(raw_m).float(), dim=-1) if raw_m is not None else None
        return v, m

    def forward(self, images=None, audio=None, raw_v=None, raw_m=None):
        if raw_v is None:
            raw_v = self.image_encoder(images)
        if raw_m is None:
            raw_m = self.music_encoder(audio)
        v, m = self.project(raw_v, raw_m)
        return v, m, raw_v, raw_m

    def frozen_param_names(self) -> set[str]:
        return {
            n
            for n, p in self.named_parameters()
            if not p.requires_grad and (n.startswith("image_encoder.") or n.startswith("music_encoder."))
        }

    def describe(self) -> dict:
        def count(module, trainable=None):
            return sum(p.numel() for p in module.parameters() if trainable is None or p.requires_grad == trainable)

        return {
            "image_encoder": {
                "name": self.image_encoder.name,
                "weights": self.image_encoder.weights_id,
                "out_dim": self.image_encoder.out_dim,
                "params": count(self.image_encoder),
                "trainable_params": count(self.image_encoder, True),
                "preprocessing": self.image_encoder.preprocessing(),
            },
            "music_encoder": {
                "name": self.music_encoder.name,
                "weights": self.music_encoder.weights_id,
                "out_dim": self.music_encoder.out_dim,
                "params": count(self.music_encoder),
                "trainable_params": count(self.music_encoder, True),
                "preprocessing": self.music_encoder.preprocessing(),
            },
            "projection": {
                "layers": "Linear-BatchNorm1d-ReLU-Dropout-Linear",
                "hidden": self.cfg.proj_hidden,
                "embed_dim": self.cfg.embed_dim,
                "dropout": self.cfg.dropout,
                "params": count(self.image_proj) + count(self.music_proj),
            },
            "finetune_last": self.cfg.finetune_last,
        }


def check_weights(cfg: ModelConfig) -> tuple[Path | None, Path | None]:
    """Validate preset and weights options before anything is built (one-line ``WeightsError``)."""
    if cfg.preset not in PRESETS:
        raise WeightsError(f"--preset: unknown preset '{cfg.preset}'; choose one of {', '.join(PRESETS)}")
    image_w = _check_file(cfg.image_weights, "--image-weights")
    music_w = _check_file(cfg.music_weights, "--music-weights")
    if cfg.preset == "tiny" and (image_w or music_w):
        raise WeightsError(
            "--preset tiny: tiny encoders are random by design; drop --image-weights/--music-weights "
            "or use --preset full"
        )
    if cfg.preset == "full" and not cfg.random_init:
        # Without the flags, the checkpoints `mipkit weights download` stored (nothing is downloaded here).
        from mipkit.config.weights import default_weights

        image_w = image_w or default_weights(cfg.image_arch)
        music_w = music_w or default_weights(cfg.music_arch)
    if cfg.preset == "full" and not cfg.random_init and (image_w is None or music_w is None):
        missing = [
            f"{flag} (or `mipkit weights download {arch}`)"
            for flag, arch, w in (
                ("--image-weights", cfg.image_arch, image_w),
                ("--music-weights", cfg.music_arch, music_w),
            )
            if w is None
        ]
        raise WeightsError(
            f"{' and '.join(missing)}: the full preset needs local pretrained weights "
            "(nothing is downloaded while training); pass the files, or --random-init for benchmarks, "
            "or --preset tiny for a quick run"
        )
    if cfg.finetune_last < 0:
        raise WeightsError("--finetune-last: must be 0 (frozen encoders) or a positive number of stages")
    return image_w, music_w


def build_model(cfg: ModelConfig) -> HGCLIM:
    """Build HG-CLIM from local weights (or random weights for ``tiny`` / ``random_init``).

    Randomly initialised encoders are drawn from ``cfg.init_seed`` without touching the global RNG,
    so the same config always gives the same encoders (their cache key is ``random:<seed>``).
    """
    image_w, music_w = check_weights(cfg)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.init_seed)
        image_encoder = build_image_encoder(cfg, image_w)
        music_encoder = build_music_encoder(cfg, music_w)
    return HGCLIM(image_encoder, music_encoder, cfg)
