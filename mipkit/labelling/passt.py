"""Emotion labels without a hand-labelled manifest.

* ``PasstMoodLabeller``: PaSST's AudioSet head restricted to the seven music-mood logits (indices
  from the taxonomy file), softmax over those seven, argmax kept when it clears a threshold.
* ``label_dataset``: relabels a built dataset (every pair whose label did not come with the data)
  and replaces the folder atomically: the new dataset is written to a sibling folder first.
Mapping tables between label sets live in ``mipkit.config.mapping``.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mipkit.config.taxonomy import load_taxonomy
from mipkit.core import ui
from mipkit.core.devices import resolve_device
from mipkit.core.errors import MipkitError
from mipkit.core.files import save_dataset_dict, swap_in_folder
from mipkit.core.ownership import (
    MARKER,
    check_plain_dataset,
    claim,
    exclusive,
    read_marker,
    staging_folder,
    write_marker,
)
from mipkit.core.paths import BUILD_DIR
from mipkit.pipeline.assemble import write_model_labels

# Labels that came with the data (a manifest, AudioSet's own annotations) always win over a model.
PROTECTED_SOURCES = frozenset({"manifest", "audioset"})
LABEL_COLUMNS = ("emotion", "emotion_source", "emotion_score")
MUSIC_MODELS = ("passt",)
PRESETS = ("full", "tiny")
LABELLING_FILE = "labelling.json"
CHART_FILE = "label_distribution.png"
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
    return PasstMoodLabeller(encoder, f"{model}:{tag}", moods.names, indices, resolved, batch_size, details)


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


# ---------------------------------------------------------------------------- relabelling a dataset
def _label_split(
    ds, labeller: PasstMoodLabeller, threshold: float, class_index: list[int], advance
) -> tuple[dict, Counter]:
    """New label columns for one split; manifest/AudioSet labels are copied unchanged."""
    from datasets import Audio

    columns = {c: ds.data.column(c).to_pylist() for c in LABEL_COLUMNS}
    todo = [i for i, s in enumerate(columns["emotion_source"]) if s not in PROTECTED_SOURCES]
    counts = Counter(protected=len(ds) - len(todo))
    audio = ds.select_columns(["audio"]).cast_column("audio", Audio(decode=False))
    for begin in range(0, len(todo), labeller.batch_size):
        chunk = todo[begin : begin + labeller.batch_size]
        clips, decoded = [], []
        for i, entry in zip(chunk, audio[chunk]["audio"]):
            try:
                clips.append(decode_clip(entry["bytes"] if entry.get("bytes") else Path(entry["path"]).read_bytes()))
                decoded.append(i)
            except Exception:  # noqa: BLE001 - one unreadable clip stays unlabelled, the rest goes on
                columns["emotion"][i], columns["emotion_score"][i] = None, None
                columns["emotion_source"][i] = labeller.provenance
                counts["undecodable"] += 1
        if clips:
            for i, probs in zip(decoded, labeller.probabilities(np.stack(clips))):
                best = int(np.argmax(probs))
                score = float(probs[best])
                confident = score >= threshold
                columns["emotion"][i] = class_index[best] if confident else None
                columns["emotion_score"][i] = score  # kept when below threshold: a later cut can reuse it
                columns["emotion_source"][i] = labeller.provenance
                counts["labelled" if confident else "unlabelled"] += 1
        advance(len(chunk))
    return columns, counts


def _replace_columns(ds, columns: dict, drop: bool):
    order, features = ds.column_names, ds.features
    new = ds.remove_columns(list(LABEL_COLUMNS))
    for name in LABEL_COLUMNS:
        new = new.add_column(name, columns[name], feature=features[name])
    new = new.select_columns(order)
    if drop:
        keep = [i for i, e in enumerate(columns["emotion"]) if e is not None]
        if len(keep) < len(new):
            new = new.select(keep)
    return new


def _write_dataset(dataset_dict, path: Path) -> None:
    """Write the relabelled dataset (a separate function so tests can make it fail mid-way)."""
    save_dataset_dict(dataset_dict, path)


def _link_extras(source: Path, staged: Path, dataset_entries: set[str]) -> None:
    """Carry the build's other files (build/, card, charts) into the new folder by hard links."""
    for entry in source.iterdir():
        if entry.name in dataset_entries or (staged / entry.name).exists():
            continue
        if entry.is_dir():
            shutil.copytree(entry, staged / entry.name, copy_function=_link_or_copy, symlinks=True)
        else:
            _link_or_copy(entry, staged / entry.name)


def _link_or_copy(src, dst) -> None:
    try:
        os.link(src, dst)
    except OSError:  # file systems without hard links
        shutil.copy2(src, dst)


def distribution_of(emotions_by_split: dict[str, list], names: list[str]) -> dict[str, dict[str, int]]:
    return {
        split: dict(Counter(names[e] if e is not None and e >= 0 else "unlabelled" for e in labels))
        for split, labels in emotions_by_split.items()
    }


def label_dataset(
    dataset_dir: str | Path,
    labeller: PasstMoodLabeller,
    threshold: float = 0.5,
    drop: bool = False,
    out: str | Path | None = None,
) -> dict:
    """Label every pair of ``dataset_dir`` whose label did not come with the data (see ``_label``).

    Holds the lock of the folder it writes, so no build or other labelling run writes it meanwhile."""
    target = Path(out) if out is not None else Path(dataset_dir)
    with exclusive(target, "--out" if out is not None else "DATASET_DIR"):
        return _label(dataset_dir, labeller, threshold, drop, out)


def _label(
    dataset_dir: str | Path, labeller: PasstMoodLabeller, threshold: float, drop: bool, out: str | Path | None
) -> dict:
    """Label every pair of ``dataset_dir`` whose label did not come with the data.

    Writes ``out`` (a new folder) or replaces ``dataset_dir`` atomically: readers see the old or the
    new dataset, never a half-written one. Returns the summary also written to ``labelling.json``.
    """
    import datasets
    from datasets import ClassLabel, DatasetDict, load_from_disk

    source = Path(dataset_dir)
    target = Path(out) if out is not None else source
    if not 0.0 <= threshold <= 1.0:
        raise MipkitError(f"--threshold {threshold} must be between 0 and 1")
    if not (source / "dataset_dict.json").is_file():
        raise MipkitError(
            f"{source.name!r} is not a saved dataset (no dataset_dict.json); pass the --out folder of a mipkit build"
        )
    in_place = target.resolve() == source.resolve()
    # In place, the split folders are rewritten and the rest is carried over: a split holding a file
    # that neither datasets nor mipkit wrote is refused. --out must be new or empty.
    owner = read_marker(source) if in_place else claim(target, "--out", create=False)
    if not in_place and target.exists() and any(target.iterdir()):  # even a labelled copy of ours is not overwritten
        raise MipkitError(
            f"--out {target.name!r} exists and is not empty; pass a new folder, or leave --out away to relabel in place"
        )
    datasets.disable_progress_bars()
    dataset = load_from_disk(str(source))
    if in_place:
        check_plain_dataset(source, dataset.keys(), "DATASET_DIR")
    first = next(iter(dataset.values()))
    missing = [c for c in ("audio", *LABEL_COLUMNS) if c not in first.column_names]
    if missing or not isinstance(first.features["emotion"], ClassLabel):
        raise MipkitError(
            f"{source.name!r} lacks {', '.join(missing) or 'a ClassLabel emotion column'}; pass a dataset built by mipkit build"
        )
    names = first.features["emotion"].names
    absent = [n for n in labeller.class_names if n not in names]
    if absent:
        raise MipkitError(
            f"{source.name!r} labels are {', '.join(names)}; the labeller predicts {', '.join(absent)} too; build it with the audioset_moods taxonomy"
        )
    class_index = [names.index(n) for n in labeller.class_names]

    todo = sum(
        sum(s not in PROTECTED_SOURCES for s in ds.data.column("emotion_source").to_pylist()) for ds in dataset.values()
    )
    relabelled, counts, emotions, overlay_rows = {}, Counter(), {}, []
    with ui.progress_bar("clips") as progress:
        bar = progress.add_task(f"labelling with {labeller.provenance}", total=todo, failed=0)
        for split, ds in dataset.items():
            columns, split_counts = _label_split(
                ds, labeller, threshold, class_index, lambda n: progress.update(bar, advance=n)
            )
            for pair_id, emotion, score, origin in zip(
                ds.data.column("pair_id").to_pylist(),
                columns["emotion"],
                columns["emotion_score"],
                columns["emotion_source"],
            ):
                if origin == labeller.provenance:
                    overlay_rows.append(
                        {
                            "pair_id": pair_id,
                            "emotion": None if emotion is None else names[emotion],
                            "emotion_score": score,
                            "emotion_source": origin,
                            "dropped": drop and emotion is None,
                        }
                    )
            counts.update(split_counts)
            relabelled[split] = _replace_columns(ds, columns, drop)
            emotions[split] = [e for e in columns["emotion"] if e is not None or not drop]
    if drop:
        counts["dropped"] = counts["unlabelled"] + counts["undecodable"]
    summary = {
        "emotion_source": labeller.provenance,
        "threshold": threshold,
        "drop": drop,
        "model": labeller.details,
        "counts": dict(counts),
        "distribution": distribution_of(emotions, names),
        "dataset": target.name,
        "labelled_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }

    staged = staging_folder(target, "labelling", owner or "unowned")
    try:
        _write_dataset(DatasetDict(relabelled), staged)
        if owner is not None:  # the new splits belong to the same output: a later build may replace them
            for split in relabelled:
                write_marker(staged / split, owner)
        else:  # a dataset saved by someone else, relabelled in place: no claim on it
            (staged / MARKER).unlink()
        (staged / LABELLING_FILE).write_text(json.dumps(summary, indent=2))
        ui.bar_chart(
            staged / CHART_FILE,
            f"pairs per emotion and split ({labeller.provenance})",
            summary["distribution"],
            xlabel="emotion",
            ylabel="pairs",
        )
        if in_place:
            _link_extras(source, staged, {"dataset_dict.json", *dataset.keys(), LABELLING_FILE, CHART_FILE})
            if (staged / BUILD_DIR).is_dir():  # a build folder: re-assembling it (resume, re-run) keeps these labels
                write_model_labels(staged / BUILD_DIR, overlay_rows)
            swap_in_folder(staged, target)
        else:
            if target.exists():
                target.rmdir()  # checked empty above
            os.replace(staged, target)
    finally:
        shutil.rmtree(staged, ignore_errors=True)  # the half-written new folder, or the old one after the swap
    summary["chart"] = str(target / CHART_FILE)
    return summary


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
