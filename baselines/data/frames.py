"""YouTube-8M frame features for training: uint8 on the device, batches gathered by index.

A split's ``rgb`` (1024-d) or ``audio`` (128-d) column is copied once into one flat uint8 tensor
``[sum of T, D]`` plus per-row ``offsets`` and ``lengths`` (:func:`load_frames`, straight from the
Arrow buffers: one memcpy per chunk of rows, no Python lists, no int64 up-cast). A batch is then
``flat[offsets[idx, None] + positions]`` -> ``[B, K, D]`` uint8, moved (if the store stays on the
CPU) and dequantised on the device (``mipkit.kinds.yt8m.tfrecords.dequantize``: 4x fewer bytes moved).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from baselines.data.pairs import DatasetError
from mipkit.kinds.yt8m.tfrecords import dequantize

COLUMNS = {"rgb": 1024, "audio": 128}
YT8M_COLUMNS = ("video_id", "rgb", "audio")


@dataclass
class FrameStore:
    flat: torch.Tensor  # [F, D] uint8
    offsets: torch.Tensor  # [N] int64, first frame of each row
    lengths: torch.Tensor  # [N] int64, frames per row

    def __len__(self) -> int:
        return int(self.lengths.shape[0])

    @property
    def nbytes(self) -> int:
        return self.flat.numel() + 16 * len(self)

    def to(self, device: torch.device, pin: bool = False) -> FrameStore:
        if device.type == "cpu":
            flat = self.flat.pin_memory() if pin and torch.cuda.is_available() else self.flat
            return FrameStore(flat, self.offsets, self.lengths)
        return FrameStore(self.flat.to(device), self.offsets.to(device), self.lengths.to(device))

    def gather(self, idx: torch.Tensor, positions: torch.Tensor, device: torch.device) -> torch.Tensor:
        """Dequantised float32 frames ``[B, K, D]`` on ``device`` for rows ``idx`` at ``positions``."""
        idx = idx.to(self.offsets.device)
        rows = self.offsets[idx][:, None] + positions.to(self.offsets.device)
        q = self.flat[rows]  # [B, K, D] uint8
        return dequantize(q.to(device, non_blocking=True))


def check_yt8m_split(split_ds, flag: str = "--dataset") -> None:
    missing = [c for c in YT8M_COLUMNS if c not in split_ds.column_names]
    if missing:
        raise DatasetError(
            f"{flag}: the split lacks column(s) {', '.join(missing)}; pass a dataset built by "
            "`mipkit build yt8m-title` or `yt8m-keyword`"
        )


def _list_parts(column):
    """Outer offsets, inner offsets and the flat uint8 values of an Arrow list<list<uint8>> column."""
    import pyarrow as pa

    if isinstance(column, pa.ChunkedArray):
        column = column.combine_chunks()
    if isinstance(column, pa.ExtensionArray):
        column = column.storage
    inner = column.values
    return column.offsets.to_numpy(), inner.offsets.to_numpy(), inner.values


def load_frames(split_ds, column: str, chunk_rows: int = 4096, log: Callable[[str], None] | None = None) -> FrameStore:
    """One modality of one split as a CPU :class:`FrameStore` (two passes: lengths, then one copy per chunk)."""
    dim = COLUMNS[column]
    table = split_ds.with_format("arrow")
    n = len(split_ds)
    t0 = time.perf_counter()
    lengths = np.zeros(n, dtype=np.int64)
    for start in range(0, n, chunk_rows):
        outer, inner_off, _ = _list_parts(table[start : start + chunk_rows][column])
        bytes_per_row = inner_off[outer[1:]] - inner_off[outer[:-1]]
        lengths[start : start + len(bytes_per_row)] = bytes_per_row // dim
    empty = np.flatnonzero(lengths == 0)
    if empty.size:
        raise DatasetError(
            f"--dataset: {empty.size} row(s) have no '{column}' frames (first: row {int(empty[0])}); "
            "rebuild the dataset"
        )
    offsets = (np.cumsum(lengths) - lengths).astype(np.int64)
    flat = torch.empty((int(lengths.sum()), dim), dtype=torch.uint8)
    flat_np = flat.numpy()
    for start in range(0, n, chunk_rows):
        outer, inner_off, values = _list_parts(table[start : start + chunk_rows][column])
        a, b = int(inner_off[outer[0]]), int(inner_off[outer[-1]])
        raw = values.to_numpy(zero_copy_only=True)[a:b].reshape(-1, dim)
        first = int(offsets[start])
        flat_np[first : first + raw.shape[0]] = raw
    if log is not None:
        seconds = time.perf_counter() - t0
        log(f"read {n} rows of '{column}' ({flat.numel() / 2**20:.1f} MiB uint8) in {seconds:.1f} s")
    return FrameStore(flat, torch.from_numpy(offsets), torch.from_numpy(lengths))


def place(stores: list[FrameStore], device: torch.device, option: str, log: Callable[[str], None]) -> list[FrameStore]:
    """Move frame stores to ``device`` when they fit (``auto``: under half of the free GPU memory), else keep
    them on the CPU (pinned) and move only each batch's uint8 frames."""
    if device.type == "cpu":
        return stores
    total = sum(s.nbytes for s in stores)
    on_device = option == "device"
    if option == "auto":
        free, _ = torch.cuda.mem_get_info(device)
        on_device = total < 0.5 * free
    log(f"frames ({total / 2**30:.2f} GiB uint8) {'on the device' if on_device else 'in pinned CPU memory'}")
    return [s.to(device) if on_device else s.to(torch.device("cpu"), pin=True) for s in stores]
