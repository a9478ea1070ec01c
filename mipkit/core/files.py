"""Writing files and datasets so that a crash leaves the old version or the new one, never half of one."""

from __future__ import annotations

import ctypes
import hashlib
import json
import os
import shutil
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

_SHA_MEMO: dict[tuple[str, int, int], str] = {}


@contextmanager
def atomic_writer(path: Path, suffix: str = ".tmp") -> Iterator[BinaryIO]:
    """A binary handle on ``path`` + ``suffix``; once the block ends, flushed to disk and moved into place."""
    tmp = path.with_name(path.name + suffix)
    with open(tmp, "wb") as handle:
        yield handle
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary name, flush to disk, then move into place."""
    with atomic_writer(path) as handle:
        handle.write(data)


def write_json(path: Path, data) -> None:
    """``data`` as indented JSON, written atomically."""
    write_atomic(path, json.dumps(data, indent=2, sort_keys=False).encode())


def swap_in_dataset(staged: Path, out: Path, splits: Iterable[str]) -> None:
    """Replace the saved ``DatasetDict`` in ``out`` by the one in ``staged``: old splits out, the staged
    ones in, ``dataset_dict.json`` last (``load_from_disk`` needs it, so a half swap is never loadable)."""
    (out / "dataset_dict.json").unlink(missing_ok=True)
    for split in splits:
        shutil.rmtree(out / split, ignore_errors=True)
        if (staged / split).exists():
            os.replace(staged / split, out / split)
    os.replace(staged / "dataset_dict.json", out / "dataset_dict.json")


def save_dataset_dict(dataset_dict, path: Path) -> None:
    """``DatasetDict.save_to_disk``, giving an empty split one (empty) shard file: with zero files,
    ``datasets`` saves a split that ``load_from_disk`` cannot read back."""
    empty = {split: 1 for split, ds in dataset_dict.items() if len(ds) == 0}
    dataset_dict.save_to_disk(str(path), num_shards=empty or None)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two folders in one step (Linux renameat2 RENAME_EXCHANGE); False where unsupported."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def swap_in_folder(staged: Path, target: Path) -> None:
    """Put the folder ``staged`` in place of ``target`` in one step where the OS can; ``staged`` then holds
    the old folder (to delete). For a whole folder; ``swap_in_dataset`` replaces the splits inside one."""
    if _exchange(staged, target):
        return
    old = target.with_name(f".{target.name}.old-{os.getpid()}")
    os.replace(target, old)  # fallback: two renames, the only moment ``target`` is absent
    try:
        os.replace(staged, target)
    except OSError:
        os.replace(old, target)
        raise
    os.replace(old, staged)


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """sha256 of a file (memoised per path, size and mtime: weights files are large)."""
    p = Path(path)
    st = p.stat()
    memo_key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if memo_key not in _SHA_MEMO:
        h = hashlib.sha256()
        with open(p, "rb") as f:
            for block in iter(lambda: f.read(chunk), b""):
                h.update(block)
        _SHA_MEMO[memo_key] = h.hexdigest()
    return _SHA_MEMO[memo_key]
