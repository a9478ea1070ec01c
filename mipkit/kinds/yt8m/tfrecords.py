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
import gzip
import hashlib
import importlib.util
import os
import re
import struct
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlparse

import numpy as np

from mipkit.core.errors import MipkitError
from mipkit.core.ids import sanitize_id

if TYPE_CHECKING:
    import pyarrow as pa

RGB_DIM = 1024
AUDIO_DIM = 128
MUSIC_VIDEO_NAME = "Music video"
MUSIC_VIDEO_KG_ID = "/m/0mdxd"
MUSIC_VIDEO_INDEX_2018 = 14  # 2018 vocabulary (3,862 classes); pass --vocabulary to be sure
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


def uint8_nested(arrays: list[np.ndarray], dim: int) -> pa.Array:
    """``[T, dim]`` uint8 arrays -> Arrow list<list<uint8>> without Python lists (``uint8_frames`` reversed)."""
    import pyarrow as pa

    lengths = np.array([a.shape[0] for a in arrays], dtype=np.int64)
    outer = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
    flat = np.concatenate([a.reshape(-1) for a in arrays]) if arrays else np.zeros(0, np.uint8)
    inner = pa.ListArray.from_arrays(
        pa.array(np.arange(0, flat.size + 1, dim, dtype=np.int32)), pa.array(flat, pa.uint8())
    )
    return pa.ListArray.from_arrays(pa.array(outer), inner)


def dataset_features():
    """The dataset's columns. rgb/audio are ``Array2D((None, D), "uint8")``: the Arrow storage is
    list<list<uint8>> either way, but Array2D reads back as one ``[T, D]`` ndarray per row (7x
    faster than Sequence(Sequence(uint8)) with ``with_format("numpy", dtype=np.uint8)``)."""
    from datasets import Array2D, Features, List, Value

    return Features(
        {
            "video_id": Value("string"),
            "youtube_id": Value("string"),
            "labels": List(Value("int64")),
            "rgb": Array2D((None, RGB_DIM), "uint8"),
            "audio": Array2D((None, AUDIO_DIM), "uint8"),
            "num_seconds": Value("int32"),
            "title": Value("string"),
            "keywords": List(Value("string")),
            "split": Value("string"),
        }
    )


def shard_schema():
    """Columns of a shard's ``videos.parquet``: the dataset's, plus provenance (partition, file)."""
    import pyarrow as pa

    return pa.schema(
        [
            ("video_id", pa.string()),
            ("youtube_id", pa.string()),
            ("labels", pa.list_(pa.int64())),
            ("rgb", pa.list_(pa.list_(pa.uint8()))),
            ("audio", pa.list_(pa.list_(pa.uint8()))),
            ("num_seconds", pa.int32()),
            ("title", pa.string()),
            ("keywords", pa.list_(pa.string())),
            ("partition", pa.string()),
            ("source_file", pa.string()),
        ]
    )


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
    values = [
        f.bytes_list.value[0] if len(f.bytes_list.value) == 1 else b"".join(f.bytes_list.value)
        for f in feature_list.feature
    ]
    wrong = [len(v) for v in values if len(v) != dim]
    if wrong:
        raise ValueError(f"{name} frames must hold {dim} bytes, found {wrong[0]}")
    return np.frombuffer(b"".join(values), dtype=np.uint8).reshape(len(values), dim)


def parse_record(data, index: int, music_index: int | None = None) -> VideoRecord:
    """Parse one serialised SequenceExample; frames are decoded only when the labels hold
    ``music_index`` (or always, with ``music_index=None``)."""
    example = _example_pb2().SequenceExample()
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
        return VideoRecord(
            index,
            sanitize_id(video_id) if video_id else f"record-{index}",
            labels,
            *empty,
            error=f"context id {video_id[:40]!r} is not a YouTube-8M pseudo id",
        )
    lists = example.feature_lists.feature_list
    try:
        rgb = _frames(lists["rgb"], RGB_DIM, "rgb") if "rgb" in lists else empty[0]
        audio = _frames(lists["audio"], AUDIO_DIM, "audio") if "audio" in lists else empty[1]
    except ValueError as exc:
        return VideoRecord(index, video_id, labels, *empty, error=str(exc))
    if rgb.shape[0] == 0 or rgb.shape[0] != audio.shape[0]:
        return VideoRecord(
            index,
            video_id,
            labels,
            *empty,
            error=f"frame counts rgb={rgb.shape[0]} audio={audio.shape[0]} (need equal, > 0)",
        )
    return VideoRecord(index, video_id, labels, rgb, audio)


def _example_pb2():
    """The ``tensorflow.SequenceExample`` protobuf classes shipped by the ``tfrecord`` package.

    Loaded from its file: ``import tfrecord`` also imports ``tfrecord.torch`` and so torch, seconds
    per build process for nothing. Registered under its own name, so a later ``import tfrecord``
    reuses it instead of registering ``example.proto`` twice.
    """
    module = sys.modules.get("tfrecord.example_pb2")
    if module is None:
        spec = importlib.util.find_spec("tfrecord")
        if spec is None or not spec.submodule_search_locations:
            raise MipkitError("reading YouTube-8M TFRecords needs the tfrecord package: pip install 'tfrecord>=1.14'")
        location = Path(list(spec.submodule_search_locations)[0]) / "example_pb2.py"
        module_spec = importlib.util.spec_from_file_location("tfrecord.example_pb2", location)
        module = importlib.util.module_from_spec(module_spec)
        sys.modules["tfrecord.example_pb2"] = module
        module_spec.loader.exec_module(module)
    return module


def _masked_crc(data) -> bytes:
    import crc32c  # installed with tfrecord

    crc = crc32c.crc32c(data)
    return struct.pack("<I", (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF)


def iter_tfrecord(path: Path) -> Iterator[bytes]:
    """The serialised records of a TFRecord file (``.gz``: gzip), CRCs checked: a truncated or
    corrupt download fails loudly instead of yielding half a record."""
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "rb") as handle:
        while header := handle.read(12):
            if len(header) < 12 or _masked_crc(header[:8]) != header[8:]:
                raise ValueError(f"{Path(path).name}: corrupt or truncated record header (re-download the file)")
            (length,) = struct.unpack("<Q", header[:8])
            data, footer = handle.read(length), handle.read(4)
            if len(data) != length or _masked_crc(data) != footer:
                raise ValueError(f"{Path(path).name}: corrupt or truncated record (re-download the file)")
            yield data


def read_records(path: Path, music_index: int | None = None) -> Iterator[VideoRecord]:
    """Every record of a local (optionally ``.gz``) TFRecord file, in file order."""
    for index, data in enumerate(iter_tfrecord(path)):
        yield parse_record(data, index, music_index)


# --- inputs: local paths, globs, folders and URLs -------------------------------------------


@dataclass(frozen=True)
class TfrecordSource:
    name: str  # file name: decides the partition (train*/validate*/test*)
    location: str  # local path or http(s) URL

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
            raise MipkitError(
                f"--tfrecords {spec!r}: only local paths and http(s) URLs are read (copy gs:// files locally first)"
            )
        path = Path(spec).expanduser()
        matches = (
            sorted(str(p) for p in path.glob("*.tfrecord*"))
            if path.is_dir()
            else sorted(glob.glob(str(path), recursive=True))
        )
        files = [m for m in matches if os.path.isfile(m)]
        if not files:
            raise MipkitError(
                f"--tfrecords {spec!r} matches no file; pass TFRecord paths, a folder, a glob such as 'frame/train*.tfrecord', or URLs"
            )
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
    target = (
        Path(cache_dir)
        / f"{sanitize_id(source.name.rsplit('.', 1)[0], 60)}-{digest}.tfrecord{'.gz' if source.name.endswith('.gz') else ''}"
    )
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


def shard_table(rows: list[tuple], source: TfrecordSource):
    """A shard's ``videos.parquet`` table from ``(VideoRecord, video_id, youtube_id, title, tags)`` rows."""
    import pyarrow as pa

    partition = partition_of(source.name)
    column = lambda i: [row[i] for row in rows]  # noqa: E731
    return pa.Table.from_arrays(
        [
            pa.array(column(1), pa.string()),
            pa.array(column(2), pa.string()),
            pa.array([r.labels for r, *_ in rows], pa.list_(pa.int64())),
            uint8_nested([r.rgb for r, *_ in rows], RGB_DIM),
            uint8_nested([r.audio for r, *_ in rows], AUDIO_DIM),
            pa.array([r.num_seconds for r, *_ in rows], pa.int32()),
            pa.array(column(3), pa.string()),
            pa.array(column(4), pa.list_(pa.string())),
            pa.array([partition] * len(rows), pa.string()),
            pa.array([source.name] * len(rows), pa.string()),
        ],
        schema=shard_schema(),
    )


def music_label_index(
    vocabulary: Path | None,
    name: str = MUSIC_VIDEO_NAME,
    kg_id: str = MUSIC_VIDEO_KG_ID,
    default: int = MUSIC_VIDEO_INDEX_2018,
) -> int:
    """Index of the "Music video" class: looked up by name (or Knowledge Graph id) in the release's
    ``vocabulary.csv`` (columns Index, TrainVideoCount, KnowledgeGraphId, Name, ...), else ``default``."""
    if vocabulary is None:
        return default
    path = Path(vocabulary)
    if not path.is_file():
        raise MipkitError(
            f"--vocabulary {path.name!r} does not exist; pass the vocabulary.csv of the YouTube-8M release"
        )
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            if not reader.fieldnames or "Index" not in reader.fieldnames or "Name" not in reader.fieldnames:
                raise MipkitError(
                    f"--vocabulary {path.name!r} has no Index and Name columns; pass the vocabulary.csv of the YouTube-8M release"
                )
            for row in reader:
                if (row.get("Name") or "").strip().lower() == name.lower() or (
                    kg_id and (row.get("KnowledgeGraphId") or "").strip() == kg_id
                ):
                    try:
                        return int(row["Index"])
                    except (TypeError, ValueError):
                        break
    except UnicodeDecodeError:
        raise MipkitError(
            f"--vocabulary {path.name!r} is not UTF-8 text; pass the vocabulary.csv of the YouTube-8M release"
        ) from None
    raise MipkitError(
        f"--vocabulary {path.name!r} has no class named {name!r} ({kg_id}); pass the vocabulary.csv of the YouTube-8M release"
    )
