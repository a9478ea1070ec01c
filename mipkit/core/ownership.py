"""What mipkit may delete, and one writer per output folder.

Every folder a command writes carries a marker file, ``.mipkit-owner``, holding the id of the
output it belongs to: the output folder itself (a build's ``--out``, ``label --out``,
``push-to-hub --to-folder``) and every folder inside it that a later run may replace (``build/``,
next to ``build.json``, which records the same id, and each split). A run deletes or replaces a
folder only when its marker names the output's id; anything else is refused with one line, and a
non-empty output folder without a marker is never written into.

One run writes an output at a time: ``writing(out)`` holds an OS lock (``flock``) on
``.NAME.mipkit-lock`` beside the folder for the whole run. The kernel drops the lock when its
process dies, so the lock of a killed run is simply taken over; the file names the holder's PID
and host for the refusal. (Beside, not inside: a relabelled or re-exported folder is swapped in
whole, and the lock must outlive the swap.)
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mipkit.core.errors import MipkitError

MARKER = ".mipkit-owner"
LOCK_SUFFIX = ".mipkit-lock"
# What `datasets` writes into a split folder (save_to_disk); a split holding only these loses nothing when rewritten.
_DATASETS_FILE = re.compile(r"(data-\d{5}-of-\d{5}\.arrow|dataset_info\.json|state\.json)")
# The entries of a build made before markers existed (adopted on resume; see ``claim``).
_LEGACY_BUILD_ENTRIES = {
    "build",
    "dataset_dict.json",
    "train",
    "validation",
    "test",
    "label_distribution.png",
    "audioset_segments.csv",
    "labelling.json",
}

_held: dict[Path, int] = {}  # lock path -> nesting depth: a command and the driver it calls share one lock


class ForeignFolderError(MipkitError):
    """A folder that mipkit did not write stands where it would write."""


class OutputBusyError(MipkitError):
    """Another run holds the output folder's lock."""


def read_marker(folder: Path) -> str | None:
    try:
        return json.loads((Path(folder) / MARKER).read_text()).get("owner")
    except (OSError, ValueError, AttributeError):
        return None


def write_marker(folder: Path, owner: str) -> None:
    path = Path(folder) / MARKER
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"owner": owner, "written_by": "mipkit"}) + "\n")
    os.replace(tmp, path)


def foreign(folder: Path, flag: str, detail: str = "") -> ForeignFolderError:
    """The one-line refusal (names the folder, never its full path)."""
    return ForeignFolderError(
        f"{flag} {Path(folder).name!r} holds files mipkit did not write{detail}; choose a new or empty {flag}, "
        "or move those files away"
    )


def _entries(folder: Path) -> list[str]:
    return (
        sorted(p.name for p in folder.iterdir() if p.name not in (MARKER, MARKER + ".tmp")) if folder.is_dir() else []
    )


def _is_plain_split(folder: Path) -> bool:
    return folder.is_dir() and all(_DATASETS_FILE.fullmatch(name) for name in _entries(folder))


def _adopt_legacy_build(out: Path) -> str | None:
    """A build written before markers (build/build.json, only known entries, plain splits) gets them now."""
    names = _entries(out)
    record = out / "build" / "build.json"
    if not record.is_file() or not set(names) <= _LEGACY_BUILD_ENTRIES:
        return None
    splits = [out / s for s in ("train", "validation", "test") if (out / s).exists()]
    if not all(_is_plain_split(s) for s in splits):
        return None
    owner = uuid.uuid4().hex
    for folder in (out, out / "build", *splits):
        write_marker(folder, owner)
    return owner


def claim(out: Path, flag: str = "--out", create: bool = True) -> str:
    """The owner id of ``out``: its marker's, a new one for a new or empty folder, else a refusal."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise MipkitError(f"{flag} {out.name!r} is a file; pass a folder (new or from an earlier run)")
    owner = read_marker(out)
    if owner is None and _entries(out):
        owner = _adopt_legacy_build(out) if create else None  # only a build resumes a build; no one else adopts it
        if owner is None:
            raise foreign(out, flag)
    if owner is None:
        owner = uuid.uuid4().hex
        if create:
            out.mkdir(parents=True, exist_ok=True)
            write_marker(out, owner)
    return owner


def check_replaceable(path: Path, owner: str, flag: str = "--out") -> None:
    """Refuse unless ``path`` is absent or a folder of this output (its marker names ``owner``)."""
    path = Path(path)
    if path.exists() and not (path.is_dir() and read_marker(path) == owner):
        raise foreign(path, flag, f" (inside {path.parent.name!r})")


def remove_owned(path: Path, owner: str, flag: str = "--out") -> None:
    """Delete a folder of this output; a folder that is not provably ours is refused."""
    check_replaceable(path, owner, flag)
    shutil.rmtree(path, ignore_errors=True)


def check_plain_dataset(folder: Path, splits, flag: str) -> None:
    """Before a split folder is rewritten in place: it holds nothing but what ``datasets`` or mipkit wrote."""
    for split in splits:
        extra = [n for n in _entries(Path(folder) / split) if not _DATASETS_FILE.fullmatch(n)]
        if extra:
            raise foreign(folder, flag, f" ({split}/{extra[0]})")


# --- one writer per output ---------------------------------------------------------------------------------------------


def lock_path(out: Path) -> Path:
    out = Path(out).resolve()  # ds, ./ds and a link to it share one lock
    return out.parent / f".{out.name}{LOCK_SUFFIX}"


def _holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        return f"PID {info['pid']} on {info['host']}, since {info['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "a process that is just starting"


@contextmanager
def exclusive(out: Path, flag: str = "--out") -> Iterator[None]:
    """Hold the lock of ``out`` (re-entrant within this process); a second run gets a one-line refusal."""
    path = lock_path(out)
    if path in _held:
        _held[path] += 1
        try:
            yield
        finally:
            _held[path] -= 1
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise OutputBusyError(
                f"{flag} {Path(out).name!r} is being written by another mipkit run ({_holder(path)}); "
                f"wait for it to end, or choose another {flag}"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)  # the holder removed the file as we opened it: lock the new one
    try:
        os.ftruncate(fd, 0)
        info = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        os.write(fd, json.dumps(info).encode())
        _held[path] = 1
        yield
    finally:
        _held.pop(path, None)
        path.unlink(missing_ok=True)  # while still locked, so no one holds a lock on a removed file
        os.close(fd)


@contextmanager
def writing(out: Path, flag: str = "--out", create: bool = True) -> Iterator[str]:
    """Lock ``out`` for this run and claim it; yields its owner id."""
    with exclusive(out, flag):
        yield claim(out, flag, create=create)


# --- staging folders of swap-in writers --------------------------------------------------------------------------------


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def staging_folder(target: Path, tag: str, owner: str) -> Path:
    """A fresh ``.NAME.TAG-PID`` beside ``target``, marked, after removing the stale ones of killed runs."""
    remove_stale_staging(target, tag)
    staged = target.with_name(f".{target.name}.{tag}-{os.getpid()}")
    if staged.exists():  # an earlier call of this process
        if read_marker(staged) is None and any(staged.iterdir()):
            raise foreign(staged, "staging folder")
        shutil.rmtree(staged)
    staged.mkdir(parents=True)
    write_marker(staged, owner)
    return staged


def remove_stale_staging(target: Path, tag: str) -> list[Path]:
    """Staging folders of ``target`` whose process is gone: removed when mipkit wrote them (marker) or empty."""
    removed = []
    for folder in target.parent.glob(f".{target.name}.{tag}-*"):
        pid = folder.name.rsplit("-", 1)[-1]
        if not (pid.isdigit() and folder.is_dir()) or _process_alive(int(pid)):
            continue
        if read_marker(folder) is not None or not any(folder.iterdir()):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed
