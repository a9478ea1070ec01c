"""Encoders of the HG-CLIM model: a timm ConvNeXt for images and hear21passt's PaSST for music.

Weights come from local files only (``image_weights`` / ``music_weights``); nothing is downloaded.
The ``tiny`` preset builds small random encoders of the same two families (CPU runs and tests).
Frozen encoders stay in eval mode whatever the model's mode: PaSST's mel front-end would otherwise
jitter and mask its input, and patchout would drop tokens.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn as nn

from mipkit.core.errors import MipkitError

SAMPLE_RATE = 32_000
CLIP_SECONDS = 10.0
CLIP_SAMPLES = 320_000

DEFAULT_IMAGE_ARCH = "convnext_base"
DEFAULT_MUSIC_ARCH = "passt_s_swa_p16_128_ap476"
PRESETS = ("full", "tiny")

# PaSST's mel front-end as hear21passt's get_basic_model builds it (frozen: no augmentation in eval).
PASST_MEL = dict(
    n_mels=128,
    sr=SAMPLE_RATE,
    win_length=800,
    hopsize=320,
    n_fft=1024,
    freqm=48,
    timem=192,
    htk=False,
    fmin=0.0,
    fmax=None,
    norm=1,
    fmin_aug_range=10,
    fmax_aug_range=2000,
)

# The tiny preset: same families, a fraction of the size (random weights only).
TINY_IMAGE = dict(arch="convnext_atto", depths=(1, 1, 1, 1), dims=(16, 32, 64, 128), input_size=(3, 64, 64))
TINY_MUSIC = dict(embed_dim=64, depth=2, num_heads=4, stride=(16, 16))


class WeightsError(MipkitError):
    """A weights file is missing or does not fit the encoder (printed as one line by the CLI)."""


@dataclass
class ModelConfig:
    preset: str = "full"
    image_arch: str = DEFAULT_IMAGE_ARCH
    music_arch: str = DEFAULT_MUSIC_ARCH
    image_weights: str | None = None
    music_weights: str | None = None
    random_init: bool = False
    init_seed: int = 0  # seed of randomly initialised encoders ("random:<seed>" in the cache key)
    embed_dim: int = 256  # shared space
    proj_hidden: int = 512  # hidden width of the projection head (choice)
    dropout: float = 0.1  # projection-head dropout (choice)
    finetune_last: int = 0  # 0 = frozen encoders; N = last N ConvNeXt stages / PaSST blocks train

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------------------------------
# Encoders
# --------------------------------------------------------------------------------------------------
class _Encoder(nn.Module):
    """Base of the two encoder wrappers: keeps frozen parts in eval() whatever the parent's mode.

    ``model.train()`` on the HG-CLIM model only switches the modules listed by
    :meth:`trainable_modules` (the fine-tuned stages) to train mode; everything else, including
    PaSST's mel front-end (which jitters its mel range and masks time/frequency in train mode), stays
    in eval mode.
    """

    name: str = ""
    weights_id: str = ""
    out_dim: int = 0

    def __init__(self):
        super().__init__()
        self.finetune_last = 0

    def stages(self) -> list[nn.Module]:  # pragma: no cover - overridden
        raise NotImplementedError

    def tail_modules(self) -> list[nn.Module]:
        """Modules after the last stage that train together with it (final norms)."""
        return []

    def trainable_modules(self) -> list[nn.Module]:
        if self.finetune_last <= 0:
            return []
        stages = self.stages()
        return stages[-self.finetune_last :] + self.tail_modules()

    def set_finetune_last(self, n: int) -> None:
        self.finetune_last = max(0, int(n))
        self.requires_grad_(False)
        for module in self.trainable_modules():
            module.requires_grad_(True)

    @property
    def frozen(self) -> bool:
        return self.finetune_last == 0

    def train(self, mode: bool = True):
        for module in self.modules():
            module.training = False
        if mode:
            trainable = self.trainable_modules()
            for module in trainable:
                module.train(True)
            self.training = bool(trainable)
        return self

    def preprocessing(self) -> dict:  # pragma: no cover - overridden
        raise NotImplementedError


class ImageEncoder(_Encoder):
    """timm ConvNeXt returning pooled features ``[B, C]``; ``data_config`` drives the preprocessing."""

    def __init__(self, model: nn.Module, name: str, weights_id: str):
        super().__init__()
        import timm.data

        self.model = model
        self.name = name
        self.weights_id = weights_id
        self.out_dim = int(model.num_features)
        cfg = timm.data.resolve_model_data_config(model)
        self.data_config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in cfg.items()}

    def stages(self) -> list[nn.Module]:
        stages = list(self.model.stages)
        return [self.model.stem] + stages if self.finetune_last > len(stages) else stages

    def tail_modules(self) -> list[nn.Module]:
        return [m for m in (getattr(self.model, "norm_pre", None), getattr(self.model, "head", None)) if m is not None]

    def preprocessing(self) -> dict:
        return {"kind": "timm_eval_transform", **self.data_config}

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model(images)


class MusicEncoder(_Encoder):
    """PaSST behind its mel front-end: waveform ``[B, 320000]`` at 32 kHz -> features ``[B, D]``.

    Equivalent to hear21passt's ``PasstBasicWrapper(mode="embed_only")`` for a 10-s clip: the
    network's second output (the mean of the CLS and distillation tokens) is the embedding.
    """

    def __init__(self, mel: nn.Module, net: nn.Module, name: str, weights_id: str, arch: dict):
        super().__init__()
        self.mel = mel
        self.net = net
        self.name = name
        self.weights_id = weights_id
        self.arch = arch
        self.out_dim = int(net.num_features)

    def stages(self) -> list[nn.Module]:
        blocks = list(self.net.blocks)
        if self.finetune_last > len(blocks):
            return [self.net.patch_embed] + blocks
        return blocks

    def tail_modules(self) -> list[nn.Module]:
        return [self.net.norm, self.net.pre_logits]

    def set_finetune_last(self, n: int) -> None:
        super().set_finetune_last(n)
        if self.finetune_last > len(self.net.blocks):
            # all blocks train: the token and position embeddings too
            for _name, p in self.net.named_parameters(recurse=False):
                p.requires_grad_(True)

    def preprocessing(self) -> dict:
        mel = {k: v for k, v in PASST_MEL.items() if k not in ("freqm", "timem", "fmin_aug_range", "fmax_aug_range")}
        return {
            "kind": "passt_mel",
            "sample_rate": SAMPLE_RATE,
            "clip_samples": CLIP_SAMPLES,
            "decode": "soundfile, mono mean, resample to 32 kHz, pad/trim",
            **mel,
        }

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # stft(return_complex=False) and input-size notices
            # the mel front-end always runs in fp32: under bf16 autocast its pre-emphasis conv would
            # round the waveform, and cuFFT has no bf16 STFT
            with torch.autocast(device_type=audio.device.type, enabled=False):
                specs = self.mel(audio.float()).unsqueeze(1)
            _, features = self.net(specs)
        return features


def _quiet():
    """hear21passt prints whole model summaries on construction and the first forward."""
    return contextlib.redirect_stdout(io.StringIO())


def _silence_passt_first_run() -> None:
    import hear21passt.models.passt as passt_module

    passt_module.first_RUN = False


def _check_file(path: str | None, flag: str) -> Path | None:
    if path is None:
        return None
    p = Path(path)
    if not p.is_file():
        raise WeightsError(f"{flag}: file '{p.name}' not found; pass a local weights file (nothing is downloaded)")
    return p


def _short_list(keys, n: int = 8) -> str:
    keys = list(keys)
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def build_image_encoder(cfg: ModelConfig, weights: Path | None) -> ImageEncoder:
    import timm

    if cfg.preset == "tiny":
        t = TINY_IMAGE
        model = timm.create_model(
            t["arch"],
            pretrained=False,
            num_classes=0,
            depths=t["depths"],
            dims=t["dims"],
            pretrained_cfg_overlay=dict(input_size=t["input_size"], crop_pct=1.0),
        )
        name = f"{t['arch']}(depths={list(t['depths'])},dims={list(t['dims'])})"
        return ImageEncoder(model, name, f"random:{cfg.init_seed}")
    if weights is None:
        model = timm.create_model(cfg.image_arch, pretrained=False, num_classes=0)
        return ImageEncoder(model, cfg.image_arch, f"random:{cfg.init_seed}")
    from mipkit.core.files import sha256_file

    try:
        model = timm.create_model(
            cfg.image_arch, pretrained=True, num_classes=0, pretrained_cfg_overlay=dict(file=str(weights))
        )
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(
            f"--image-weights: '{weights.name}' does not fit {cfg.image_arch} ({first[:200]}); "
            "pass weights of that architecture or choose --image-arch"
        ) from None
    _check_timm_keys(model, weights, cfg.image_arch)
    return ImageEncoder(model, cfg.image_arch, "sha256:" + sha256_file(weights))


def _check_timm_keys(model: nn.Module, weights: Path, arch: str) -> None:
    """timm loads non-strictly when the classifier is dropped: make sure every backbone key was there."""
    import importlib

    from timm.models import load_state_dict

    sd = load_state_dict(str(weights))
    module = importlib.import_module(type(model).__module__)
    filter_fn = getattr(module, "checkpoint_filter_fn", None)
    if filter_fn is not None:
        try:
            sd = filter_fn(sd, model)
        except Exception:  # noqa: BLE001 - the filter is best effort; the key check below decides
            pass
    missing = [k for k in model.state_dict() if k not in sd and not k.startswith("head.fc.")]
    if missing:
        raise WeightsError(
            f"--image-weights: '{weights.name}' lacks {len(missing)} keys of {arch}: "
            f"{_short_list(missing)}; pass a checkpoint of that architecture"
        )


def build_music_encoder(cfg: ModelConfig, weights: Path | None) -> MusicEncoder:
    from hear21passt.models.passt import PaSST, get_model
    from hear21passt.models.preprocess import AugmentMelSTFT

    with _quiet(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mel = AugmentMelSTFT(**PASST_MEL)
        if cfg.preset == "tiny":
            t = TINY_MUSIC
            net = PaSST(
                img_size=(128, 1000),
                patch_size=16,
                stride=t["stride"],
                in_chans=1,
                num_classes=527,
                embed_dim=t["embed_dim"],
                depth=t["depth"],
                num_heads=t["num_heads"],
                distilled=True,
            )
            name = f"passt(embed_dim={t['embed_dim']},depth={t['depth']},stride={t['stride'][0]})"
            arch = dict(t, stride=list(t["stride"]))
        else:
            net = get_model(arch=cfg.music_arch, pretrained=False)
            name, arch = cfg.music_arch, {"arch": cfg.music_arch}
    _silence_passt_first_run()
    weights_id = f"random:{cfg.init_seed}"
    if weights is not None:
        from mipkit.core.files import sha256_file

        load_music_weights(net, weights)
        weights_id = "sha256:" + sha256_file(weights)
    return MusicEncoder(mel, net, name, weights_id, arch)


def load_music_weights(net: nn.Module, weights: Path) -> None:
    """Strictly load a PaSST state dict (a plain one, or under ``state_dict``/``model``, ``net.``-prefixed)."""
    from hear21passt.models.passt import checkpoint_filter_fn

    try:
        sd = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable file gets the same one-line message
        raise WeightsError(
            f"--music-weights: cannot read '{weights.name}' as a torch state dict "
            f"({type(e).__name__}); pass a PaSST .pt checkpoint"
        ) from None
    for key in ("state_dict", "model", "net"):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
    if not isinstance(sd, dict):
        raise WeightsError(f"--music-weights: '{weights.name}' holds no state dict; pass a PaSST .pt checkpoint")
    for prefix in ("module.", "net."):
        if sd and all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix) :]: v for k, v in sd.items()}
    if "time_new_pos_embed" in sd:
        sd = checkpoint_filter_fn(sd, net)
    result = net.load_state_dict(sd, strict=False)
    problems = []
    if result.missing_keys:
        problems.append(f"missing {len(result.missing_keys)} keys: {_short_list(result.missing_keys)}")
    if result.unexpected_keys:
        problems.append(f"unexpected {len(result.unexpected_keys)} keys: {_short_list(result.unexpected_keys)}")
    if problems:
        raise WeightsError(
            f"--music-weights: '{weights.name}' does not fit the PaSST model (" + "; ".join(problems) + ")"
        )
