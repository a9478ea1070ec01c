"""Frame-level YouTube-8M TFRecords, read without TensorFlow, and their uint8 features.

Each record is a ``tf.SequenceExample``: context ``id`` (4-character pseudo id, bytes) and
``labels`` (int64 list); feature lists ``rgb`` (one 1024-byte string per second) and ``audio``
(one 128-byte string per second). The ``tfrecord`` package frames the records; the protobuf is
parsed here so the per-second byte strings are joined straight into one uint8 array (its
``sequence_loader`` goes through ``np.array(..., dtype=bytes)``, which drops trailing zero bytes
when a feature list holds several values).

The features stay quantised (uint8) in the dataset; ``dequantize`` maps them back to the floats of
the release and is what trainers call, on the device, after batching.
"""

from __future__ import annotations

import csv
import glob
import hashlib
import os
import re
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

import numpy as np

from mipkit.errors import MipkitError
from mipkit.ids import sanitize_id

RGB_DIM = 1024
AUDIO_DIM = 128
MUSIC_VIDEO_NAME = "Music video"
MUSIC_VIDEO_KG_ID = "/m/0mdxd"
MUSIC_VIDEO_INDEX_2018 = 14   # 2018 vocabulary (3,862 classes); pass --vocabulary to be sure
PARTITIONS = ("train", "validate", "test")
_PSEUDO_ID = re.compile(r"^[A-Za-z0-9_-]{1,32}$")


def dequantize(q, max_value: float = 2.0, min_value: float = -2.0):
    """uint8 -> float32 as in the YouTube-8M starter code: ``q * 4/255 + 4/512 - 2``.

    Accepts numpy arrays and torch tensors (kept on their device: call it after moving the uint8
    batch to the GPU, which moves 4x fewer bytes than floats would).
    """
    span = max_value - min_value
    scale, bias = span / 255.0, span / 512.0 + min_value
    if type(q).__module__.startswith("torch"):
        return q.float() * scale + bias
    return np.asarray(q, dtype=np.float32) * np.float32(scale) + np.float32(bias)


def uint8_frames(column, dim: int) -> list[np.ndarray]:
    """Zero-copy ``[T, dim]`` uint8 views of an Arrow ``rgb``/``audio`` column.

    ``column`` is e.g. ``dataset.with_format("arrow")[indices]["rgb"]``; no Python lists and no
    int64 up-cast (``with_format("numpy")`` casts integers to int64 unless given ``dtype``).
    """
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if isinstance(column, pa.ExtensionArray):
        column = column.storage
    outer = column.offsets.to_numpy()
    inner = column.values
    inner_offsets = inner.offsets.to_numpy()
    flat = inner.values.to_numpy(zero_copy_only=True)
    out = []
    for row in range(len(column)):
        start, end = inner_offsets[outer[row]], inner_offsets[outer[row + 1]]
        out.append(flat[start:end].reshape(-1, dim))
    return out


@dataclass
class VideoRecord:
    """One SequenceExample. ``error`` is set (and the arrays empty) when the record is unusable."""

    index: int
    video_id: str
    labels: list[int]
    rgb: np.ndarray
    audio: np.ndarray
    error: str = ""

    @property
    def num_seconds(self) -> int:
        return int(self.rgb.shape[0])


def _frames(feature_list, dim: int, name: str) -> np.ndarray:
    values = [f.bytes_list.value[0] if len(f.bytes_list.value) == 1 else b"".join(f.bytes_list.value) for f in feature_list.feature]
    wrong = [len(v) for v in values if len(v) != dim]
    if wrong:
        raise ValueError(f"{name} frames must hold {dim} bytes, found {wrong[0]}")
    return np.frombuffer(b"".join(values), dtype=np.uint8).reshape(len(values), dim)


def parse_record(data, index: int, music_index: int | None = None) -> VideoRecord:
    """Parse one serialised SequenceExample; frames are decoded only when the labels hold
    ``music_index`` (or always, with ``music_index=None``)."""
    from tfrecord import example_pb2

    example = example_pb2.SequenceExample()
    empty = np.zeros((0, RGB_DIM), np.uint8), np.zeros((0, AUDIO_DIM), np.uint8)
    try:
        example.ParseFromString(bytes(data))
    except Exception as exc:  # noqa: BLE001 - protobuf raises its own DecodeError
        return VideoRecord(index, f"record-{index}", [], *empty, error=f"not a SequenceExample: {exc}")
    context = example.context.feature
    raw_id = context["id"].bytes_list.value[0] if "id" in context and context["id"].bytes_list.value else b""
    video_id = raw_id.decode("utf-8", "replace")
    labels = [int(v) for v in context["labels"].int64_list.value] if "labels" in context else []
    if music_index is not None and music_index not in labels:
        return VideoRecord(index, video_id, labels, *empty)
    if not _PSEUDO_ID.match(video_id):
        return VideoRecord(index, sanitize_id(video_id) if video_id else f"record-{index}", labels, *empty,
                           error=f"context id {video_id[:40]!r} is not a YouTube-8M pseudo id")
    lists = example.feature_lists.feature_list
    try:
        rgb = _frames(lists["rgb"], RGB_DIM, "rgb") if "rgb" in lists else empty[0]
        audio = _frames(lists["audio"], AUDIO_DIM, "audio") if "audio" in lists else empty[1]
    except ValueError as exc:
        return VideoRecord(index, video_id, labels, *empty, error=str(exc))
    if rgb.shape[0] == 0 or rgb.shape[0] != audio.shape[0]:
        return VideoRecord(index, video_id, labels, *empty, error=f"frame counts rgb={rgb.shape[0]} audio={audio.shape[0]} (need equal, > 0)")
    return VideoRecord(index, video_id, labels, rgb, audio)


def read_records(path: Path, music_index: int | None = None) -> Iterator[VideoRecord]:
    """Every record of a local (optionally ``.gz``) TFRecord file, in file order."""
    from tfrecord.reader import tfrecord_iterator

    compression = "gzip" if str(path).endswith(".gz") else None
    for index, data in enumerate(tfrecord_iterator(str(path), compression_type=compression)):
        yield parse_record(data, index, music_index)


# --- inputs: local paths, globs, folders and URLs -------------------------------------------

@dataclass(frozen=True)
class TfrecordSource:
    name: str          # file name: decides the partition (train*/validate*/test*)
    location: str      # local path or http(s) URL

    @property
    def is_url(self) -> bool:
        return self.location.startswith(("http://", "https://"))

    def identity(self) -> str:
        """What identifies the input for a resumed build: URL, or path with size and mtime."""
        if self.is_url:
            return self.location
        stat = os.stat(self.location)
        return f"{os.path.abspath(self.location)}:{stat.st_size}:{int(stat.st_mtime)}"


def resolve_inputs(specs: list[str]) -> list[TfrecordSource]:
    """Expand paths, folders (their ``*.tfrecord``) and globs; keep URLs. Sorted, de-duplicated."""
    found: dict[str, TfrecordSource] = {}
    for spec in specs:
        if spec.startswith(("http://", "https://")):
            name = unquote(urlparse(spec).path.rstrip("/").rsplit("/", 1)[-1])
            found[spec] = TfrecordSource(name or spec, spec)
            continue
        if "://" in spec:
            raise MipkitError(f"--tfrecords {spec!r}: only local paths and http(s) URLs are read (copy gs:// files locally first)")
        path = Path(spec).expanduser()
        matches = sorted(str(p) for p in path.glob("*.tfrecord*")) if path.is_dir() else sorted(glob.glob(str(path), recursive=True))
        files = [m for m in matches if os.path.isfile(m)]
        if not files:
            raise MipkitError(f"--tfrecords {spec!r} matches no file; pass TFRecord paths, a folder, a glob such as 'frame/train*.tfrecord', or URLs")
        for match in files:
            found[os.path.abspath(match)] = TfrecordSource(os.path.basename(match), match)
    return sorted(found.values(), key=lambda s: (s.name, s.location))


def partition_of(name: str) -> str | None:
    """``train0000.tfrecord`` -> train, ``validate0000.tfrecord`` -> validate, ``test*`` -> test."""
    lowered = name.lower()
    return next((p for p in PARTITIONS if lowered.startswith(p)), None)


def fetch_to_cache(source: TfrecordSource, cache_dir: Path, timeout: float = 60.0, retries: int = 3) -> Path:
    """The local file of a source; URLs are downloaded once into ``cache_dir`` (atomically)."""
    if not source.is_url:
        return Path(source.location)
    digest = hashlib.sha1(source.location.encode()).hexdigest()[:10]
    target = Path(cache_dir) / f"{sanitize_id(source.name.rsplit('.', 1)[0], 60)}-{digest}.tfrecord{'.gz' if source.name.endswith('.gz') else ''}"
    if target.is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f"{target.name}.{os.getpid()}.part")
    for attempt in range(retries + 1):
        try:
            with urllib.request.urlopen(source.location, timeout=timeout) as response, open(tmp, "wb") as handle:
                while chunk := response.read(1 << 20):
                    handle.write(chunk)
                expected = response.headers.get("Content-Length")
            if expected is not None and tmp.stat().st_size != int(expected):
                raise OSError(f"short read: {tmp.stat().st_size} of {expected} bytes")
            os.replace(tmp, target)
            return target
        except urllib.error.HTTPError as exc:
            tmp.unlink(missing_ok=True)
            if exc.code < 500 and exc.code != 429:
                raise OSError(f"download of {source.name} failed: HTTP {exc.code}") from None
            error = f"HTTP {exc.code}"
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            error = f"{type(exc).__name__}: {exc}"
        if attempt < retries:
            time.sleep(min(2.0 * (attempt + 1), 30.0))
    raise OSError(f"download of {source.name} failed after {retries + 1} tries: {error}")


def music_label_index(vocabulary: Path | None, name: str = MUSIC_VIDEO_NAME, kg_id: str = MUSIC_VIDEO_KG_ID,
                      default: int = MUSIC_VIDEO_INDEX_2018) -> int:
    """Index of the "Music video" class: looked up by name (or Knowledge Graph id) in the release's
    ``vocabulary.csv`` (columns Index, TrainVideoCount, KnowledgeGraphId, Name, ...), else ``default``."""
    if vocabulary is None:
        return default
    path = Path(vocabulary)
    if not path.is_file():
        raise MipkitError(f"--vocabulary {path.name!r} does not exist; pass the vocabulary.csv of the YouTube-8M release")
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or "Index" not in reader.fieldnames or "Name" not in reader.fieldnames:
            raise MipkitError(f"--vocabulary {path.name!r} has no Index and Name columns; pass the vocabulary.csv of the YouTube-8M release")
        for row in reader:
            if (row.get("Name") or "").strip().lower() == name.lower() or (kg_id and (row.get("KnowledgeGraphId") or "").strip() == kg_id):
                try:
                    return int(row["Index"])
                except (TypeError, ValueError):
                    break
    raise MipkitError(f"--vocabulary {path.name!r} has no class named {name!r} ({kg_id}); pass the vocabulary.csv of the YouTube-8M release")
