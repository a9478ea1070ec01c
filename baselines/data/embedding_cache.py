"""Frozen-encoder embedding cache.

With frozen encoders the expensive part of HG-CLIM (PaSST ~127 GMAC per clip, ConvNeXt-B ~15 GMAC
per image) does not change during training, so the encoder features of every split are computed
once (eval mode, ``torch.inference_mode``, batched, bf16 autocast on CUDA) and saved as
``CACHE_DIR/{split}.pt``. Training then runs the projection heads on these features.

Each file carries a *key*: encoder names, weights ids (sha256 of the weights file, or
``random:<seed>``), the preprocessing of both modalities, and the dataset split's fingerprint. A
file whose key differs from the current one is stale: it is rebuilt (with a message naming what
changed), never silently reused.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import torch

from baselines.runtime.checkpoint import save_atomic

CACHE_FORMAT = 1


def make_key(model, split: str, dataset_fingerprint: str) -> dict:
    """Everything the cached features depend on (JSON-serialisable)."""
    return {
        "format": CACHE_FORMAT,
        "split": split,
        "dataset_fingerprint": dataset_fingerprint,
        "image_encoder": model.image_encoder.name,
        "image_weights": model.image_encoder.weights_id,
        "image_preprocessing": model.image_encoder.preprocessing(),
        "music_encoder": model.music_encoder.name,
        "music_weights": model.music_encoder.weights_id,
        "music_preprocessing": model.music_encoder.preprocessing(),
    }


def _normalise(key: dict) -> dict:
    return json.loads(json.dumps(key, sort_keys=True))


def key_differences(old: dict, new: dict) -> list[str]:
    old, new = _normalise(old), _normalise(new)
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))


def cache_path(cache_dir: str | Path, split: str) -> Path:
    return Path(cache_dir) / f"{split}.pt"


@torch.inference_mode()
def compute_features(
    model, loader, device: torch.device, log: Callable[[str], None] | None = None, what: str = ""
) -> dict:
    """Run both encoders over a DataLoader of ``PairDataset`` rows; features come back on the CPU in fp32."""
    model.eval()
    use_bf16 = device.type == "cuda"
    raw_v, raw_m, index = [], [], []
    n_done, t0 = 0, time.perf_counter()
    for batch in loader:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16):
            rv = model.image_encoder(batch["image"].to(device, non_blocking=True))
            rm = model.music_encoder(batch["audio"].to(device, non_blocking=True))
        raw_v.append(rv.float().cpu())
        raw_m.append(rm.float().cpu())
        index.append(batch["index"])
        n_done += len(batch["index"])
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    if log is not None and n_done:
        log(f"encoded {n_done} pairs{what} in {seconds:.1f} s ({n_done / max(seconds, 1e-9):.1f} pairs/s)")
    out = {
        "raw_v": torch.cat(raw_v) if raw_v else torch.zeros(0),
        "raw_m": torch.cat(raw_m) if raw_m else torch.zeros(0),
        "index": torch.cat(index) if index else torch.zeros(0, dtype=torch.long),
        "seconds": seconds,
    }
    return out


def load_cache(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - a truncated / foreign file is simply rebuilt
        return None


def load_or_build(
    cache_dir: str | Path,
    split: str,
    key: dict,
    build: Callable[[], dict],
    log: Callable[[str], None] = print,
    labels: torch.Tensor | None = None,
) -> dict:
    """Return ``{"raw_v", "raw_m", "labels", "key", ...}`` for one split, from the cache when fresh.

    ``build()`` computes ``{"raw_v", "raw_m"}`` in dataset order (or any other named tensors, e.g.
    ``{"text"}``: every tensor it returns is stored). A missing file is built; a file with another
    key is reported (which fields changed) and rebuilt.
    """
    path = cache_path(cache_dir, split)
    cached = load_cache(path)
    key = _normalise(key)
    if cached is not None:
        old_key = json.loads(cached.get("key_json", "{}"))
        changed = key_differences(old_key, key)
        if not changed:
            rows = next((len(v) for v in cached.values() if isinstance(v, torch.Tensor)), 0)
            log(f"embedding cache for '{split}': up to date ({path.name}, {rows} rows)")
            return cached
        log(f"embedding cache for '{split}' is stale (changed: {', '.join(changed)}); rebuilding")
    else:
        log(f"embedding cache for '{split}': building ({path.name})")
    feats = build()
    tensors = {k: v.contiguous() for k, v in feats.items() if isinstance(v, torch.Tensor)}
    rows = len(next(iter(tensors.values()))) if tensors else 0
    entry = {
        "key_json": json.dumps(key, sort_keys=True),
        **tensors,
        "labels": labels if labels is not None else torch.full((rows,), -1, dtype=torch.long),
        "encode_seconds": float(feats.get("seconds", 0.0)),
    }
    save_atomic(entry, path)
    return entry


def split_features(
    model,
    split_ds,
    split: str,
    device: torch.device,
    cache_dir: str | Path | None,
    batch_size: int = 64,
    workers: int = 0,
    log: Callable[[str], None] = print,
    seed: int = 0,
) -> dict:
    """Encoder features of one dataset split: from/into the cache when ``cache_dir`` is set.

    Returns ``{"raw_v" [N, Dv], "raw_m" [N, Dm], "labels" [N]}`` on the CPU, in dataset order.
    """
    from torch.utils.data import DataLoader

    from baselines.data.pairs import PairDataset, fingerprint, labels_of

    labels = labels_of(split_ds)

    def build() -> dict:
        dataset = PairDataset(split_ds, model.image_encoder.data_config)
        loader = DataLoader(
            dataset,
            batch_size=batch_size,
            shuffle=False,
            num_workers=workers,
            pin_memory=device.type == "cuda",
            persistent_workers=False,
            generator=torch.Generator().manual_seed(seed),
        )
        with torch.random.fork_rng(devices=[]):  # PaSST's mel front-end draws random numbers even in eval
            return compute_features(model, loader, device, log=log, what=f" of '{split}'")

    if cache_dir is None:
        feats = build()
        return {"raw_v": feats["raw_v"], "raw_m": feats["raw_m"], "labels": labels}
    key = make_key(model, split, fingerprint(split_ds))
    return load_or_build(cache_dir, split, key, build, log=log, labels=labels)
