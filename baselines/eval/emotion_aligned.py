"""Emotion-aligned retrieval with unpaired image and music sets (EMO-CLIM protocol).

``mipkit eval RUN --emotion-aligned --images DIR_OR_HUB --music DIR_OR_HUB [--mapping NAME]``

* The image set is any HF dataset with an ``image`` column and a label column (ClassLabel or
  string; ``--image-label-column``); the music set has ``audio`` and ``emotion`` (e.g. a
  ``mipkit build audioset-mood`` folder). The two sets are not paired.
* Both are embedded with the run's HG-CLIM model: frozen encoders (eval mode, inference mode,
  batched, bf16 autocast on CUDA; features cached in the run's embedding cache, keyed by encoder,
  weights, preprocessing and the set's fingerprint) and the trained projection heads.
* Relevance: the image's label, mapped through ``--mapping`` (a table in ``recipes/taxonomies/``,
  e.g. ``emoclim_image_to_music``; ``none`` compares names case-insensitively) equals the music
  label. Image labels without a counterpart become -1: skipped as queries, never relevant, counted.
* Metrics: ``baselines.eval.metrics.label_metrics`` both ways (``i2m``: image queries over the music
  set, ``m2i``: music queries over the image set): ``p@1``, ``p@5``, ``mrr``, ``map``,
  class-macro-averaged. Written to ``RUN/eval_emotion_aligned.json``.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch
from torch.utils.data import DataLoader, Dataset

from mipkit.core.errors import MipkitError

RESULT_FILE = "eval_emotion_aligned.json"
MUSIC_LABEL_COLUMN = "emotion"
METRIC_KEYS = ("p@1", "p@5", "mrr", "map")


class EmotionAlignedError(MipkitError):
    """An unusable input of the emotion-aligned evaluation (printed as one line by the CLI)."""


# ---------------------------------------------------------------------------- data sets
def load_set(spec: str, flag: str, split: str):
    """``(dataset, display name, split used)``: a ``load_from_disk`` folder or a Hub id.

    A ``DatasetDict`` gives its ``split``; a single saved ``Dataset`` is used whole (split ``None``).
    """
    import datasets

    p = Path(spec)
    if p.exists():
        try:
            obj = datasets.load_from_disk(str(p))
        except Exception as e:  # noqa: BLE001 - not a saved dataset: one line
            raise EmotionAlignedError(
                f"{flag}: '{p.name}' is not a saved dataset ({type(e).__name__}); pass a folder "
                "written by save_to_disk (e.g. `mipkit build audioset-mood`) or a Hub id"
            ) from None
        name = p.name
    elif spec.count("/") == 1 and not spec.startswith((".", "/")):
        try:
            obj = datasets.load_dataset(spec)
        except Exception as e:  # noqa: BLE001 - offline or unknown id: one line
            raise EmotionAlignedError(
                f"{flag}: cannot load Hub dataset '{spec}' ({type(e).__name__}); pass a local dataset folder"
            ) from None
        name = spec
    else:
        raise EmotionAlignedError(
            f"{flag}: '{p.name}' not found; pass a dataset folder (load_from_disk) or a Hub id (owner/name)"
        )
    if isinstance(obj, (datasets.DatasetDict, dict)):
        if split not in obj:
            raise EmotionAlignedError(
                f"{flag}: the dataset has no split '{split}' (it has {', '.join(obj)}); "
                f"choose one with {'--image-split' if flag == '--images' else '--music-split'}"
            )
        ds, used = obj[split], split
    else:
        ds, used = obj, None
    if len(ds) == 0:
        raise EmotionAlignedError(
            f"{flag}: the set is empty{f' (split {used!r})' if used else ''}; choose another split"
        )
    return ds, name, used


def _require_column(ds, column: str, flag: str, kinds: tuple, what: str, hint: str) -> None:
    if column not in ds.column_names:
        raise EmotionAlignedError(
            f"{flag}: the dataset has no '{column}' column (it has {', '.join(ds.column_names)}); {hint}"
        )
    feature = ds.features[column]
    if not isinstance(feature, kinds) and not (isinstance(feature, dict) and "bytes" in feature):
        raise EmotionAlignedError(f"{flag}: column '{column}' is {type(feature).__name__}, not {what}; {hint}")


def column_labels(ds, column: str, flag: str, hint: str) -> list[str | None]:
    """Label names of a ClassLabel or string column (None for missing labels)."""
    import datasets

    if column not in ds.column_names:
        raise EmotionAlignedError(
            f"{flag}: the dataset has no label column '{column}' (it has {', '.join(ds.column_names)}); {hint}"
        )
    feature = ds.features[column]
    values = list(ds.select_columns([column])[column])
    if isinstance(feature, datasets.ClassLabel):
        return [None if v is None or v < 0 else feature.names[int(v)] for v in values]
    if isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string"):
        return [v.strip() if isinstance(v, str) and v.strip() else None for v in values]
    raise EmotionAlignedError(
        f"{flag}: label column '{column}' is {feature!r}; it must be a ClassLabel or a string column"
    )


class _Rows(Dataset):
    """One media column of a set, decoded without torchcodec: ``{"index", "x"}``."""

    def __init__(self, ds, column: str, decode: Callable):
        import datasets

        feature = ds.features[column]
        if isinstance(feature, datasets.Image):
            ds = ds.cast_column(column, datasets.Image(decode=False))
        elif isinstance(feature, datasets.Audio):
            ds = ds.cast_column(column, datasets.Audio(decode=False))
        self.ds = ds.select_columns([column])
        self.column, self.decode = column, decode

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, index: int) -> dict:
        return {"index": int(index), "x": self.decode(self.ds[int(index)][self.column])}


@torch.inference_mode()
def _encode(encoder, loader, device: torch.device, log, what: str) -> dict:
    import time

    feats, n, t0 = [], 0, time.perf_counter()
    with torch.random.fork_rng(devices=[]):  # PaSST's mel front-end draws random numbers even in eval
        for batch in loader:
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                f = encoder(batch["x"].to(device, non_blocking=True))
            feats.append(f.float().cpu())
            n += len(batch["index"])
    seconds = time.perf_counter() - t0
    log(f"encoded {n} {what} in {seconds:.1f} s ({n / max(seconds, 1e-9):.1f}/s)")
    return {"raw": torch.cat(feats) if feats else torch.zeros(0, encoder.out_dim), "seconds": seconds}


def set_features(
    model,
    ds,
    modality: str,
    device: torch.device,
    cache_dir: str | Path | None,
    batch_size: int = 64,
    workers: int = 0,
    log: Callable[[str], None] = print,
) -> torch.Tensor:
    """Frozen-encoder features ``[N, D]`` (CPU, fp32, set order) of one modality, via the embedding cache."""
    from baselines.data.pairs import decode_audio, decode_image, fingerprint, image_transform

    encoder = model.image_encoder if modality == "images" else model.music_encoder
    if modality == "images":
        transform = image_transform(encoder.data_config)
        rows = _Rows(ds, "image", lambda entry: transform(decode_image(entry)))
    else:
        rows = _Rows(ds, "audio", lambda entry: torch.from_numpy(decode_audio(entry)))

    def build() -> dict:
        model.eval()
        loader = DataLoader(
            rows, batch_size=batch_size, shuffle=False, num_workers=workers, pin_memory=device.type == "cuda"
        )
        return _encode(encoder, loader, device, log, modality)

    if cache_dir is None or not model.encoders_frozen:
        return build()["raw"]
    from baselines.data.embedding_cache import load_or_build

    fp = fingerprint(ds)
    key = {
        "format": 1,
        "kind": f"emotion_aligned_{modality}",
        "dataset_fingerprint": fp,
        "encoder": encoder.name,
        "weights": encoder.weights_id,
        "preprocessing": encoder.preprocessing(),
    }
    name = f"aligned_{modality}_{hashlib.sha1(fp.encode()).hexdigest()[:12]}"
    return load_or_build(cache_dir, name, key, build, log=log)["raw"]


@torch.inference_mode()
def project(model, raw: torch.Tensor, modality: str, device: torch.device, chunk: int = 4096) -> torch.Tensor:
    """Projected, L2-normalised embeddings (fp32, CPU) of encoder features, in eval mode."""
    model.eval()
    out = []
    for start in range(0, raw.shape[0], chunk):
        part = raw[start : start + chunk].to(device)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            v, m = model.project(raw_v=part) if modality == "images" else model.project(raw_m=part)
        out.append((v if modality == "images" else m).float().cpu())
    return torch.cat(out) if out else torch.zeros(0, model.cfg.embed_dim)


# ---------------------------------------------------------------------------- labels
def _mapping(name: str | None):
    if name is None or name.strip().lower() == "none":
        return None
    from mipkit.config.mapping import load_mapping

    try:
        return load_mapping(name)
    except MipkitError as e:
        raise EmotionAlignedError(f"--mapping: {e}") from None


def align_labels(
    image_labels: list[str | None], music_labels: list[str | None], mapping, music_names: list[str] | None = None
) -> dict:
    """Class indices in the music label set for both sets (-1: unlabelled / no counterpart).

    ``music_names`` (the music ClassLabel's names) fixes the class order; otherwise the sorted
    distinct music labels. With a mapping, music names are normalised through its target taxonomy
    (so display names such as "Happy music" match); without, names compare case-insensitively.
    """

    def music_key(label: str) -> str:
        if mapping is not None:
            try:
                return mapping.target.normalize(label)
            except ValueError:
                pass
        return label.strip().lower()

    names = music_names if music_names is not None else sorted({label for label in music_labels if label is not None})
    vocab: dict[str, int] = {}
    classes: list[str] = []
    for name in names:
        key = music_key(name)
        if key not in vocab:
            vocab[key] = len(classes)
            classes.append(key)
    music = [-1 if label is None else vocab.get(music_key(label), -1) for label in music_labels]
    image, unlabelled, skipped = [], 0, Counter()
    for label in image_labels:
        if label is None:
            image.append(-1)
            unlabelled += 1
            continue
        if mapping is None:
            target = label.strip().lower()
        else:
            try:
                target = mapping.map(label)
            except ValueError:  # a label the table does not know: no counterpart either
                target = None
        index = vocab.get(target.lower(), -1) if target is not None else -1
        if index < 0:
            skipped[label] += 1
        image.append(index)
    return {
        "classes": classes,
        "image": torch.tensor(image, dtype=torch.long),
        "music": torch.tensor(music, dtype=torch.long),
        "image_unlabelled": unlabelled,
        "image_skipped_labels": dict(sorted(skipped.items())),
    }


def chance_p1(query_labels: torch.Tensor, candidate_labels: torch.Tensor) -> float:
    """Expected P@1 (= P@k) of a random ranking, macro over the query classes that count."""
    counts = torch.bincount(candidate_labels[candidate_labels >= 0], minlength=int(query_labels.max()) + 2)
    present = [int(c) for c in query_labels[query_labels >= 0].unique() if int(c) < len(counts) and counts[int(c)] > 0]
    if not present:
        return float("nan")
    return float(sum(float(counts[c]) for c in present) / len(present) / max(len(candidate_labels), 1))


def counted_queries(query_labels: torch.Tensor, candidate_labels: torch.Tensor) -> int:
    """Queries ``label_metrics`` counts: labelled, with at least one relevant candidate."""
    present = torch.zeros(max(int(candidate_labels.max()), int(query_labels.max()), 0) + 1, dtype=torch.bool)
    present[candidate_labels[candidate_labels >= 0]] = True
    ok = query_labels >= 0
    return int(present[query_labels[ok]].sum())


def aligned_metrics(v: torch.Tensor, m: torch.Tensor, image_labels: torch.Tensor, music_labels: torch.Tensor) -> dict:
    """``{"i2m": ..., "m2i": ..., "chance": ..., "queries": ...}`` of unpaired image / music embeddings."""
    from baselines.eval.metrics import label_metrics

    sim = v.float() @ m.float().T
    return {
        "i2m": label_metrics(sim, image_labels, music_labels),
        "m2i": label_metrics(sim.T, music_labels, image_labels),
        "chance": {"i2m": chance_p1(image_labels, music_labels), "m2i": chance_p1(music_labels, image_labels)},
        "queries": {
            "i2m": counted_queries(image_labels, music_labels),
            "m2i": counted_queries(music_labels, image_labels),
        },
    }


# ---------------------------------------------------------------------------- the command
def evaluate_emotion_aligned(
    run_dir: str | Path,
    images: str,
    music: str,
    split: str = "test",
    image_split: str | None = None,
    music_split: str | None = None,
    image_label_column: str = "emotion",
    mapping: str | None = "none",
    checkpoint: str = "latest",
    device: str = "auto",
    batch_size: int = 64,
    workers: int = 0,
    log: Callable[[str], None] = print,
    image_weights: str | None = None,
    music_weights: str | None = None,
) -> dict:
    """Evaluate an HG-CLIM run on an unpaired image set and music set; write ``RUN/eval_emotion_aligned.json``."""
    import datasets

    from baselines.eval.retrieval import _jsonable
    from baselines.runtime.checkpoint import CheckpointError
    from baselines.runtime.config import resolve_device
    from baselines.tasks.hgclim import load_run_model, run_cache_dir

    run_dir = Path(run_dir)
    config_path = run_dir / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"RUN: '{run_dir.name}' has no config.json; pass the --out folder of a training run")
    config = json.loads(config_path.read_text(encoding="utf-8"))
    task = config.get("task") or "hgclim"
    if task != "hgclim":
        raise EmotionAlignedError(
            f"RUN: '{run_dir.name}' is a {task} run; --emotion-aligned evaluates HG-CLIM (image-music) runs only"
        )
    mapping_table = _mapping(mapping)

    # every input check before the model is built
    image_ds, image_name, image_used = load_set(images, "--images", image_split or split)
    music_ds, music_name, music_used = load_set(music, "--music", music_split or split)
    _require_column(
        image_ds,
        "image",
        "--images",
        (datasets.Image,),
        "an image column",
        "pass an image dataset with an 'image' column",
    )
    _require_column(
        music_ds,
        "audio",
        "--music",
        (datasets.Audio,),
        "an audio column",
        "pass a music dataset with an 'audio' column (e.g. `mipkit build audioset-mood`)",
    )
    img_labels = column_labels(image_ds, image_label_column, "--images", "name it with --image-label-column")
    mus_labels = column_labels(
        music_ds,
        MUSIC_LABEL_COLUMN,
        "--music",
        "the music set needs an 'emotion' column (e.g. `mipkit build audioset-mood`)",
    )
    feature = music_ds.features[MUSIC_LABEL_COLUMN]
    aligned = align_labels(img_labels, mus_labels, mapping_table, list(getattr(feature, "names", None) or []) or None)
    if not bool((aligned["music"] >= 0).any()):
        raise EmotionAlignedError("--music: no clip has an emotion label; label the set first (`mipkit label`)")
    mapping_name = "none" if mapping_table is None else mapping_table.name
    if not bool((aligned["image"] >= 0).any()):
        seen = sorted({label for label in img_labels if label is not None})
        shown = ", ".join(seen[:8]) + (", …" if len(seen) > 8 else "") if seen else "none: every image is unlabelled"
        raise EmotionAlignedError(
            f"--images: no image label maps to a music label with --mapping {mapping_name} (image labels: {shown}; "
            f"music labels: {', '.join(aligned['classes'])}); pass --mapping emoclim_image_to_music or a mapping "
            ".toml, or another --image-label-column"
        )

    dev = resolve_device(device)
    model, step = load_run_model(run_dir, config, checkpoint, dev, image_weights, music_weights)
    cache_dir = run_cache_dir(run_dir, config)
    v = project(model, set_features(model, image_ds, "images", dev, cache_dir, batch_size, workers, log), "images", dev)
    m = project(model, set_features(model, music_ds, "music", dev, cache_dir, batch_size, workers, log), "music", dev)
    metrics = aligned_metrics(v, m, aligned["image"], aligned["music"])

    classes = aligned["classes"]
    n_unmapped = sum(aligned["image_skipped_labels"].values())
    result = {
        "run": run_dir.name,
        "checkpoint_step": step,
        "task": "emotion_aligned",
        "images": image_name,
        "image_split": image_used,
        "image_label_column": image_label_column,
        "music": music_name,
        "music_split": music_used,
        "mapping": mapping_name,
        "counts": {
            "images": len(image_ds),
            "music": len(music_ds),
            "skipped": aligned["image_unlabelled"] + n_unmapped,
            "skipped_unmapped": n_unmapped,
            "skipped_unlabelled": aligned["image_unlabelled"],
            "music_unlabelled": int((aligned["music"] < 0).sum()),
        },
        "skipped_labels": aligned["image_skipped_labels"],
        "classes": {
            name: {"images": int((aligned["image"] == i).sum()), "music": int((aligned["music"] == i).sum())}
            for i, name in enumerate(classes)
        },
        **metrics,
    }
    (run_dir / RESULT_FILE).write_text(json.dumps(_jsonable(result), indent=2) + "\n", encoding="utf-8")
    return result


def render_table(result: dict):
    """A rich table: the four metrics (and chance P@1) in both directions, counts as the caption."""
    from rich.table import Table

    table = Table(title=f"{result['run']} · emotion-aligned · {result['images']} ↔ {result['music']}")
    table.add_column("metric")
    table.add_column("image→music", justify="right")
    table.add_column("music→image", justify="right")

    def fmt(x) -> str:
        return "n/a" if x is None or x != x else f"{x:.4f}"

    for key in METRIC_KEYS:
        table.add_row(key, fmt(result["i2m"][key]), fmt(result["m2i"][key]))
    table.add_row("p@1 (chance)", fmt(result["chance"]["i2m"]), fmt(result["chance"]["m2i"]))
    table.add_row("queries counted", str(result["queries"]["i2m"]), str(result["queries"]["m2i"]))
    c = result["counts"]
    skipped = ", ".join(f"{k} {n}" for k, n in result["skipped_labels"].items())
    table.caption = (
        f"{c['images']} images, {c['music']} music clips, mapping {result['mapping']}; "
        f"{c['skipped']} images skipped ({c['skipped_unlabelled']} unlabelled"
        + (f"; no counterpart: {skipped}" if skipped else "")
        + ")"
    )
    return table
