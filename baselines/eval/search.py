"""``mipkit search RUN``: find music for a new image (or images for a clip) with a trained run.

The library (a built dataset, by default the run's) is embedded once with the run's encoders and
projection heads, and both sides go into FAISS inner-product indexes (``IndexFlatIP`` on L2-normalised
vectors, i.e. exact cosine ranking) cached in ``RUN/search/<library>/``. The cache carries a key like
the embedding cache's: the encoders, their weights, the preprocessing, every split's fingerprint and
the checkpoint's sha256, so a retrained run or a rebuilt library is re-indexed, never reused stale.

HG-CLIM runs take ``--image FILE`` (searching the clips) or ``--music FILE`` (searching the images;
``mipkit.cli.search`` decodes the middle 10 s of the file, or 10 s from ``--start``, with ffmpeg). II-CLVM runs take ``--video-features FILE.npy``
(``[T, 1024]`` frame features, uint8-quantised or float) and search the videos' music.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from mipkit.core.errors import MipkitError

INDEX_FORMAT = 1
SEARCH_DIR = "search"


class SearchError(MipkitError):
    """A query or library cannot be used (printed as one line by the CLI)."""


@dataclass
class Library:
    """A library's two FAISS indexes (one per modality) and what each row is."""

    indexes: dict  # "music" / "image" (HG-CLIM) or "music" / "video" (II-CLVM) -> faiss.Index
    rows: list[dict]
    rebuilt: bool

    def search(self, side: str, query: np.ndarray, k: int) -> list[dict]:
        index = self.indexes[side]
        scores, ids = index.search(normalised(query), min(k, index.ntotal))
        return [
            {"rank": rank + 1, **self.rows[int(i)], "score": float(s)}
            for rank, (s, i) in enumerate(zip(scores[0], ids[0]))
            if i >= 0
        ]


def normalised(vectors) -> np.ndarray:
    """float32, C-contiguous, unit rows: inner product on these is cosine similarity."""
    import faiss

    x = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32).reshape(-1, np.shape(vectors)[-1]))
    faiss.normalize_L2(x)
    return x


def flat_index(vectors) -> faiss.Index:  # noqa: F821 - faiss is imported lazily
    import faiss

    x = normalised(vectors)
    index = faiss.IndexFlatIP(x.shape[1])
    index.add(x)
    return index


def library_folder(run_dir: Path, library: str) -> Path:
    """``RUN/search/<name>-<hash>``: one folder per library (a hash of where it is, so two folders named alike differ)."""
    from mipkit.core.html import safe_name

    where = str(Path(library).resolve()) if Path(library).exists() else library
    return (
        Path(run_dir)
        / SEARCH_DIR
        / f"{safe_name(Path(library).name)}-{hashlib.sha256(where.encode()).hexdigest()[:10]}"
    )


def cached_library(
    folder: Path,
    key: dict,
    sides: tuple[str, str],
    build: Callable[[], tuple[dict, list[dict]]],
    log: Callable[[str], None],
) -> Library:
    """The library's indexes from ``folder`` when their key matches ``key``; otherwise built and saved."""
    import faiss

    key_path = folder / "key.json"
    key = json.loads(json.dumps(key, sort_keys=True))
    if key_path.is_file() and all((folder / f"{side}.faiss").is_file() for side in sides):
        old = json.loads(key_path.read_text(encoding="utf-8"))
        if old == key:
            rows = json.loads((folder / "rows.json").read_text(encoding="utf-8"))
            log(f"search index of '{folder.name}': up to date ({len(rows)} rows)")
            return Library({side: faiss.read_index(str(folder / f"{side}.faiss")) for side in sides}, rows, False)
        changed = sorted(k for k in set(old) | set(key) if old.get(k) != key.get(k))
        log(f"search index of '{folder.name}' is stale (changed: {', '.join(changed)}); rebuilding")
    else:
        log(f"search index of '{folder.name}': building")
    vectors, rows = build()
    folder.mkdir(parents=True, exist_ok=True)
    indexes = {side: flat_index(vectors[side]) for side in sides}
    for side, index in indexes.items():
        faiss.write_index(index, str(folder / f"{side}.faiss.tmp"))
        (folder / f"{side}.faiss.tmp").replace(folder / f"{side}.faiss")
    (folder / "rows.json").write_text(json.dumps(rows) + "\n", encoding="utf-8")
    key_path.write_text(
        json.dumps(key, sort_keys=True, indent=1) + "\n", encoding="utf-8"
    )  # last: the index is complete
    return Library(indexes, rows, True)


def _non_empty_splits(dataset_dict) -> list[str]:
    order = [s for s in ("train", "validation", "test") if s in dataset_dict] + [
        s for s in dataset_dict if s not in ("train", "validation", "test")
    ]
    return [s for s in order if len(dataset_dict[s])]


# --------------------------------------------------------------------------------------------- HG-CLIM


def pair_rows(split_ds, split: str) -> list[dict]:
    from mipkit.core.ids import redact_url

    columns = {
        c: split_ds[c] if c in split_ds.column_names else [None] * len(split_ds)
        for c in ("pair_id", "source_url", "start_s", "title")
    }
    return [
        {
            "pair_id": columns["pair_id"][i],
            "source_url": redact_url(columns["source_url"][i]),
            "start_s": columns["start_s"][i],
            "title": columns["title"][i],
            "split": split,
        }
        for i in range(len(split_ds))
    ]


def hgclim_library(
    run_dir: Path, config: dict, model, library: str, checkpoint: Path, device: torch.device, log: Callable[[str], None]
) -> Library:
    from baselines.data.embedding_cache import make_key, split_features
    from baselines.data.pairs import fingerprint, load_pair_dataset
    from baselines.eval.retrieval import project_features
    from baselines.tasks.hgclim import run_cache_dir
    from mipkit.core.files import sha256_file

    dd = load_pair_dataset(library)
    splits = _non_empty_splits(dd)
    if not splits or "audio" not in dd[splits[0]].column_names or "image" not in dd[splits[0]].column_names:
        raise SearchError(
            f"--library: '{Path(library).name}' holds no image-music pairs; pass a `mipkit build mipnet` folder"
        )
    folder = library_folder(run_dir, library)
    same_as_run = (
        Path(library).resolve() == Path(config["dataset"]).resolve()
        if Path(library).exists()
        else library == config["dataset"]
    )
    features_dir = run_cache_dir(run_dir, config) if same_as_run else None
    features_dir = features_dir or str(folder / "features")
    key = {
        "format": INDEX_FORMAT,
        "checkpoint": "sha256:" + sha256_file(checkpoint),
        "splits": {s: make_key(model, s, fingerprint(dd[s])) for s in splits},
    }

    def build():
        images, music, rows = [], [], []
        for split in splits:
            feats = split_features(model, dd[split], split, device, features_dir, log=log)
            v, m = project_features(model, feats["raw_v"], feats["raw_m"], device)
            images.append(v.cpu().numpy())
            music.append(m.cpu().numpy())
            rows += pair_rows(dd[split], split)
        return {"image": np.concatenate(images), "music": np.concatenate(music)}, rows

    return cached_library(folder, key, ("image", "music"), build, log)


@torch.inference_mode()
def embed_image_file(model, path: Path, device: torch.device) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    from baselines.data.pairs import image_transform

    try:
        image = Image.open(path).convert("RGB")
    except (OSError, UnidentifiedImageError):
        raise SearchError(f"--image: '{path.name}' is not an image PIL can read; pass a JPEG or PNG file") from None
    x = image_transform(model.image_encoder.data_config)(image)[None].to(device)
    v, _ = model.project(raw_v=model.image_encoder(x))
    return v.float().cpu().numpy()


@torch.inference_mode()
def embed_music(model, waveform: np.ndarray, device: torch.device) -> np.ndarray:
    """A 10-s clip (mono, 32 kHz, padded or cut to 320,000 samples) in the run's shared space."""
    from baselines.models.encoders import CLIP_SAMPLES

    audio = np.asarray(waveform, dtype=np.float32).reshape(-1)[:CLIP_SAMPLES]
    audio = np.pad(audio, (0, CLIP_SAMPLES - audio.size))
    _, m = model.project(raw_m=model.music_encoder(torch.from_numpy(audio)[None].to(device)))
    return m.float().cpu().numpy()


# --------------------------------------------------------------------------------------------- II-CLVM


def video_rows(split_ds, split: str) -> list[dict]:
    columns = {
        c: split_ds[c] if c in split_ds.column_names else [None] * len(split_ds)
        for c in ("video_id", "youtube_id", "title")
    }
    return [{**{c: columns[c][i] for c in columns}, "split": split} for i in range(len(split_ds))]


def iiclvm_model(run_dir: Path, config: dict, checkpoint: Path, device: torch.device):
    from baselines.models.sequence import build_sequence_model
    from baselines.runtime.checkpoint import load_checkpoint, load_model_state
    from baselines.tasks.iiclvm import IICLVMConfig, sequence_config

    cfg = IICLVMConfig.from_dict(config)
    if cfg.text:
        raise SearchError(
            "--video-features: II-CLVTM runs also need each video's title or keywords; search with an "
            "II-CLVM or CLVM run (trained without --text)"
        )
    model = build_sequence_model(sequence_config(cfg), seed=cfg.seed)
    load_model_state(model, load_checkpoint(checkpoint)["model"])
    return model.to(device).eval(), cfg


def iiclvm_library(
    run_dir: Path, model, cfg, library: str, checkpoint: Path, device: torch.device, log: Callable[[str], None]
) -> Library:
    from baselines.data.frames import check_yt8m_split, load_frames
    from baselines.data.pairs import fingerprint
    from baselines.eval.sequence import embed
    from baselines.tasks.iiclvm import load_yt8m
    from mipkit.core.files import sha256_file

    dd = load_yt8m(library)
    splits = _non_empty_splits(dd)
    for split in splits:
        check_yt8m_split(dd[split], "--library")
    key = {
        "format": INDEX_FORMAT,
        "checkpoint": "sha256:" + sha256_file(checkpoint),
        "sampling": [cfg.sampling, cfg.segments],
        "splits": {s: fingerprint(dd[s]) for s in splits},
    }

    def build():
        videos, music, rows = [], [], []
        for split in splits:
            stores = tuple(load_frames(dd[split], column) for column in ("rgb", "audio"))
            v, m = embed(model, stores, None, cfg, device)
            videos.append(v.numpy())
            music.append(m.numpy())
            rows += video_rows(dd[split], split)
        return {"video": np.concatenate(videos), "music": np.concatenate(music)}, rows

    return cached_library(library_folder(run_dir, library), key, ("video", "music"), build, log)


@torch.inference_mode()
def embed_video_features(model, cfg, path: Path, device: torch.device) -> np.ndarray:
    from baselines.data.frames import dequantize
    from baselines.models.sequence import sample_positions

    try:
        frames = np.load(path, allow_pickle=False)
    except (OSError, ValueError):
        raise SearchError(
            f"--video-features: '{path.name}' is not a .npy array; save the [T, 1024] frame features with numpy.save"
        ) from None
    if frames.ndim != 2 or frames.shape[1] != 1024 or frames.shape[0] < 1:
        raise SearchError(
            f"--video-features: '{path.name}' has shape {list(frames.shape)}; expected [T, 1024] "
            "(YouTube-8M rgb frame features, one row per second)"
        )
    x = torch.from_numpy(dequantize(frames) if frames.dtype == np.uint8 else frames.astype(np.float32))
    positions = sample_positions(torch.tensor([x.shape[0]]), cfg.segments, cfg.sampling, train=False)[0]
    return model.encode_video(x[positions][None].to(device)).float().cpu().numpy()


# --------------------------------------------------------------------------------------------- entry point


def search_run(
    run_dir: str | Path,
    image: Path | None = None,
    music: np.ndarray | None = None,
    video_features: Path | None = None,
    library: str | None = None,
    k: int = 10,
    query_name: str | None = None,
    checkpoint: str = "latest",
    device: str = "auto",
    log: Callable[[str], None] = print,
) -> dict:
    """Top-``k`` of the library for one query: ``{"query", "searched", "library", "results": [...]}``.

    ``music`` is the waveform of a 10-s clip at 32 kHz (mono), ``query_name`` what the output calls it."""
    from baselines.data.pairs import dataset_display_name
    from baselines.runtime.checkpoint import CheckpointError, resolve_checkpoint
    from baselines.runtime.config import resolve_device

    run_dir = Path(run_dir)
    queries = {"--image": image, "--music": music, "--video-features": video_features}
    given = [flag for flag, value in queries.items() if value is not None]
    if len(given) != 1:
        raise SearchError("pass exactly one query: --image FILE, --music FILE or --video-features FILE.npy")
    flag = given[0]
    query = Path(query_name or "clip") if flag == "--music" else Path(queries[flag])
    if flag != "--music" and not query.is_file():
        raise SearchError(f"{flag}: file '{query.name}' not found")
    if k < 1:
        raise SearchError(f"-k {k}: must be at least 1")
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"RUN: '{run_dir.name}' has no config.json; pass the --out folder of a training run")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    task = config.get("task") or "hgclim"
    library = library or config["dataset"]
    ckpt = resolve_checkpoint(run_dir, checkpoint, flag="--checkpoint")
    dev = resolve_device(device)
    if task == "hgclim":
        if flag == "--video-features":
            raise SearchError("--video-features: this is an HG-CLIM run; query it with --image FILE or --music FILE")
        from baselines.tasks.hgclim import load_run_model

        model, _ = load_run_model(run_dir, config, str(ckpt), dev)
        lib = hgclim_library(run_dir, config, model, library, ckpt, dev, log)
        if flag == "--image":
            vector, side = embed_image_file(model, query, dev), "music"
        else:
            vector, side = embed_music(model, music, dev), "image"
    else:
        if flag != "--video-features":
            raise SearchError(
                f"{flag}: this is a {task} run of feature sequences; query it with --video-features FILE.npy"
            )
        model, cfg = iiclvm_model(run_dir, config, ckpt, dev)
        lib = iiclvm_library(run_dir, model, cfg, library, ckpt, dev, log)
        vector, side = embed_video_features(model, cfg, query, dev), "music"
    return {
        "run": run_dir.name,
        "task": task,
        "query": {flag.lstrip("-"): query.name},
        "searched": side,
        "library": dataset_display_name(library),
        "k": k,
        "results": lib.search(side, vector, k),
    }


def render_results(result: dict):
    from rich.table import Table

    table = Table(
        title=f"{result['run']} · top {len(result['results'])} {result['searched']} of {result['library']} "
        f"for {next(iter(result['query'].values()))}"
    )
    hgclim = result["task"] == "hgclim"
    columns = (
        ("rank", "score", "pair_id", "title", "source_url", "start_s")
        if hgclim
        else ("rank", "score", "video_id", "youtube_id", "title")
    )
    for column in columns:
        table.add_column(column, justify="right" if column in ("rank", "score", "start_s") else "left", overflow="fold")
    for row in result["results"]:
        table.add_row(
            *[f"{row[c]:.4f}" if c == "score" else "" if row.get(c) is None else str(row[c]) for c in columns]
        )
    return table
