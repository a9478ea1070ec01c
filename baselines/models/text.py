"""Frozen text encoders of II-CLVTM: the title or keywords of a video -> one feature vector.

* ``tiny`` preset: :class:`HashedNgramEncoder`, a deterministic random bag of hashed word and
  character-trigram embeddings (no download, no extra package): for CPU runs and tests. Its
  features carry the words' identity, not their meaning.
* real use: ``--text-weights FOLDER``, a sentence-transformers / Hugging Face model saved locally
  (``config.json``, tokenizer files, ``model.safetensors`` or ``pytorch_model.bin``), read with the
  ``transformers`` package: mean pooling over tokens (attention-masked) then L2 normalisation; a CLIP
  folder (``model_type: clip``, the paper's "Clip-text") uses CLIP's projected text features.
  Nothing is downloaded (``local_files_only``).

Text of a video *(choice)*: ``title`` as is; ``keyword`` = the keywords joined with ", ".
Features are computed once per split and cached (``baselines.models.text.text_features``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from mipkit.core.errors import MipkitError

TEXT_FIELDS = ("title", "keyword")
TINY_TEXT_DIM = 64
_WORD = re.compile(r"\w+", re.UNICODE)


class TextEncoderError(MipkitError):
    """The text encoder cannot be built (printed as one line by the CLI)."""


def _stable_hash(token: str) -> int:
    return int.from_bytes(hashlib.blake2b(token.encode("utf-8"), digest_size=8).digest(), "little")


class HashedNgramEncoder(nn.Module):
    """Words and character trigrams (``#word#``) hashed into ``buckets`` random embeddings, averaged."""

    name = "hashed-ngram"

    def __init__(self, dim: int = TINY_TEXT_DIM, buckets: int = 1 << 14, seed: int = 0):
        super().__init__()
        self.dim, self.buckets, self.seed = dim, buckets, seed
        g = torch.Generator().manual_seed(seed)
        self.bag = nn.EmbeddingBag(buckets, dim, mode="mean")
        with torch.no_grad():
            self.bag.weight.copy_(torch.randn(buckets, dim, generator=g))
        self.requires_grad_(False)
        self.weights_id = f"random:{seed}"

    def tokens(self, text: str) -> list[int]:
        out = []
        for word in _WORD.findall(text.lower()):
            out.append(_stable_hash("w:" + word) % self.buckets)
            padded = f"#{word}#"
            out += [_stable_hash("c:" + padded[i : i + 3]) % self.buckets for i in range(max(1, len(padded) - 2))]
        return out or [_stable_hash("<empty>") % self.buckets]

    def preprocessing(self) -> dict:
        return {
            "tokens": "lowercase words + character trigrams, blake2b-hashed",
            "buckets": self.buckets,
            "pooling": "mean",
            "normalise": "l2",
        }

    @torch.inference_mode()
    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        ids = [self.tokens(t) for t in texts]
        flat = torch.tensor([i for row in ids for i in row], dtype=torch.long)
        offsets = torch.tensor([0] + [len(r) for r in ids[:-1]], dtype=torch.long).cumsum(0)
        return F.normalize(self.bag(flat, offsets), dim=-1)


class HFTextEncoder(nn.Module):
    """A local sentence-transformers / Hugging Face text model (needs ``transformers``), frozen."""

    def __init__(self, folder: Path, max_length: int = 77):
        super().__init__()
        try:
            import transformers
        except ImportError:
            raise TextEncoderError(
                "--text-weights: reading a local text model needs the 'transformers' package "
                "(pip install transformers); or use --preset tiny"
            ) from None
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
        self.is_clip = config.get("model_type") == "clip"
        self.tokenizer = transformers.AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        cls = transformers.CLIPModel if self.is_clip else transformers.AutoModel
        self.model = cls.from_pretrained(str(folder), local_files_only=True).eval().requires_grad_(False)
        self.name = f"{config.get('model_type', 'hf')}:{folder.name}"
        self.max_length = max_length
        self.weights_id = _folder_weights_id(folder)
        self.dim = int(config.get("projection_dim") if self.is_clip else config.get("hidden_size"))

    def preprocessing(self) -> dict:
        return {
            "tokenizer": type(self.tokenizer).__name__,
            "max_length": self.max_length,
            "pooling": "clip text projection" if self.is_clip else "attention-masked mean",
            "normalise": "l2",
        }

    @torch.inference_mode()
    def forward(self, texts: Sequence[str]) -> torch.Tensor:
        batch = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        )
        if self.is_clip:
            return F.normalize(self.model.get_text_features(**batch).float(), dim=-1)
        hidden = self.model(**batch).last_hidden_state.float()
        mask = batch["attention_mask"].unsqueeze(-1).float()
        return F.normalize((hidden * mask).sum(1) / mask.sum(1).clamp(min=1), dim=-1)


def _folder_weights_id(folder: Path) -> str:
    from mipkit.core.files import sha256_file

    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).is_file():
            return "sha256:" + sha256_file(folder / name)
    raise TextEncoderError(f"--text-weights: '{folder.name}' holds no model.safetensors or pytorch_model.bin")


def check_text_weights(preset: str, weights: str | None) -> Path | None:
    """One-line errors for the text encoder options (before anything is built)."""
    if preset == "tiny":
        if weights:
            raise TextEncoderError(
                "--preset tiny: the tiny text encoder is random by design; drop --text-weights or use --preset full"
            )
        return None
    if not weights:
        raise TextEncoderError(
            "--text-weights: II-CLVTM with the full preset needs a local text model folder "
            "(sentence-transformers / Hugging Face; nothing is downloaded), or --preset tiny"
        )
    folder = Path(weights)
    if not (folder / "config.json").is_file():
        raise TextEncoderError(f"--text-weights: '{folder.name}' is not a model folder (no config.json)")
    return folder


def build_text_encoder(preset: str, weights: str | None, seed: int = 0) -> nn.Module:
    folder = check_text_weights(preset, weights)
    if folder is None:
        return HashedNgramEncoder(seed=seed)
    return HFTextEncoder(folder)


def texts_of(split_ds, field: str) -> list[str]:
    """The text of every row: ``title``, or the keywords joined with ", " *(choice)*."""
    if field == "title":
        return [t or "" for t in split_ds["title"]]
    if field == "keyword":
        return [", ".join(k or []) for k in split_ds["keywords"]]
    raise TextEncoderError(f"--text: unknown field '{field}'; choose one of {', '.join(TEXT_FIELDS)}")


def text_features(
    encoder,
    split_ds,
    split: str,
    field: str,
    cache_dir: str | Path | None,
    fingerprint: str,
    batch_size: int = 256,
    log: Callable[[str], None] = print,
) -> torch.Tensor:
    """``[N, D]`` fp32 text features of one split (CPU), from/into ``CACHE_DIR/text-{field}-{split}.pt``.

    The cache key (embedding cache rules: a stale file is rebuilt, never reused) holds the encoder
    name, weights id, preprocessing, the text field and the split's fingerprint.
    """
    from baselines.data.embedding_cache import load_or_build

    def build() -> dict:
        texts = texts_of(split_ds, field)
        parts = [encoder(texts[i : i + batch_size]) for i in range(0, len(texts), batch_size)]
        return {"text": torch.cat(parts).float() if parts else torch.zeros(0, getattr(encoder, "dim", 0))}

    if cache_dir is None:
        return build()["text"]
    key = {
        "format": 1,
        "split": split,
        "dataset_fingerprint": fingerprint,
        "text_field": field,
        "text_encoder": encoder.name,
        "text_weights": encoder.weights_id,
        "text_preprocessing": encoder.preprocessing(),
    }
    return load_or_build(cache_dir, f"text-{field}-{split}", key, build, log=log)["text"]
