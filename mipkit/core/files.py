"""Writing files and datasets so that a crash leaves the old version or the new one, never half of one."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

_SHA_MEMO: dict[tuple[str, int, int], str] = {}


def write_atomic(path: Path, data: bytes) -> None:
    """Write to a temporary name, flush to disk, then move into place."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


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
