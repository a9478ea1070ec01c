"""The labelling work, cut into one task per Arrow file of a split, run by the build engines.

A task reads the audio of its rows straight from its file (a local path, or an object-store URL),
loads the labeller once per worker process and returns the probabilities; the driver turns them into
labels and writes the dataset. The same tasks run in this process (``--engine local``), a process pool
(``--workers N``) or as Ray tasks (``--engine ray``), in the same batches, so every engine gives the
same labels.

Under Ray the weights travel as bytes through Ray's object store (read once by the driver), so no node
needs the checkpoint on its disk; a task's node only needs to read the dataset: an object-store URL,
or a local folder on a file system every node mounts (``--shared-fs``).
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mipkit.core.errors import MipkitError
from mipkit.core.storage import Location
from mipkit.labelling.passt import PasstMoodLabeller, decode_clip, make_labeller

_LABELLERS: dict[str, PasstMoodLabeller] = {}  # spec key -> labeller: built once per worker process


@dataclass
class FileTask:
    """The rows of one Arrow file of one split to label (row numbers inside the file)."""

    index: int
    split: str
    file: Location
    offset: int  # rows of the split before this file
    rows: list[int]


def _key(spec: dict) -> str:
    return json.dumps(spec, sort_keys=True, default=str)


def remember(labeller: PasstMoodLabeller) -> None:
    """Let tasks in this process use the driver's labeller instead of building a second one."""
    _LABELLERS[_key(labeller.spec)] = labeller


def _labeller(spec: dict, weights: bytes | None) -> PasstMoodLabeller:
    key = _key(spec)
    if key not in _LABELLERS:
        if weights is not None:  # shipped by the driver: this node needs no copy of the checkpoint
            digest = hashlib.sha256(weights).hexdigest()
            path = Path(tempfile.gettempdir()) / f"mipkit-weights-{digest[:24]}.pt"
            if not path.is_file():
                tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
                tmp.write_bytes(weights)
                tmp.replace(path)
            spec = {**spec, "weights": str(path)}
        _LABELLERS[key] = make_labeller(**spec)
    return _LABELLERS[key]


def _read_audio(file: Location, rows: list[int]) -> list[dict]:
    import pyarrow as pa

    source = pa.memory_map(file.url) if file.is_local else pa.BufferReader(file.read_bytes())
    with source:
        table = pa.ipc.open_stream(source).read_all()  # save_to_disk's files are Arrow streams
        return table.column("audio").take(pa.array(rows, pa.int64())).to_pylist()


def label_file(task: FileTask, spec: dict, weights: bytes | None, on_event=None) -> dict:
    """Probabilities for the task's rows (None for a clip that does not decode), in batches of the labeller."""
    labeller = _labeller(spec, weights)
    entries = _read_audio(task.file, task.rows)
    probs: list[list[float] | None] = [None] * len(task.rows)
    for begin in range(0, len(task.rows), labeller.batch_size):
        clips, where = [], []
        for position in range(begin, min(begin + labeller.batch_size, len(task.rows))):
            entry = entries[position] or {}
            try:
                data = entry["bytes"] if entry.get("bytes") else Path(entry["path"]).read_bytes()
                clips.append(decode_clip(data))
                where.append(position)
            except Exception:  # noqa: BLE001 - one unreadable clip stays unlabelled, the rest goes on
                pass
        if clips:
            for position, p in zip(where, labeller.probabilities(np.stack(clips))):
                probs[position] = [float(x) for x in p]
        if on_event is not None:
            on_event(min(labeller.batch_size, len(task.rows) - begin))
    return {"provenance": labeller.provenance, "probs": probs}


def file_rows(path: str) -> int:
    """Rows of one local Arrow stream file (memory-mapped: nothing is copied)."""
    import pyarrow as pa

    with pa.memory_map(path) as source:
        return pa.ipc.open_stream(source).read_all().num_rows


def plan_tasks(dataset, todo: dict[str, list[int]], source: Location, remote: bool) -> list[FileTask]:
    """One task per Arrow file holding rows to label. ``remote``: tasks read the files where the dataset
    lives (the store URL, or the local folder), not the copy a store's dataset was downloaded to."""
    tasks: list[FileTask] = []
    for split, ds in dataset.items():
        if getattr(ds, "_indices", None) is not None:
            raise MipkitError(f"split {split!r} is a selection of another dataset; save it with save_to_disk first")
        wanted, offset = sorted(todo.get(split, [])), 0
        for entry in ds.cache_files:
            local = entry["filename"]
            count = file_rows(local)
            rows = [i - offset for i in wanted if offset <= i < offset + count]
            if rows:
                file = source / split / Path(local).name if remote and not source.is_local else Location(local)
                tasks.append(FileTask(len(tasks), split, file, offset, rows))
            offset += count
        if offset != len(ds):
            raise MipkitError(f"split {split!r}: its Arrow files hold {offset} rows, not {len(ds)}; save it again")
    return tasks
