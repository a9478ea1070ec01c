"""Where a build's outputs live: a local folder or any fsspec URL (s3://, gs://, file://, ...).

``Location`` is a small path-like handle (``loc / "build"``, ``is_file()``, ``read_text()``,
``glob()``, ``write_bytes()``) over one fsspec filesystem, so the pipeline reads and writes a local
folder and a bucket prefix with the same code. Writes are all-or-nothing: a local file is written to a
temporary name and renamed; on an object store one PUT (or one multipart upload, which completes on
close) makes the object appear whole.

Credentials and endpoints come from the usual places (environment, ``~/.aws``, ...) plus
``storage_options``; they live only in memory: ``str(loc)`` and ``loc.display`` never show them.
"""

from __future__ import annotations

import hashlib
import json
import os
import posixpath
import shutil
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from mipkit.core.errors import MipkitError

STORAGE_OPTIONS_ENV = "MIPKIT_STORAGE_OPTIONS"  # JSON, the same as --storage-options


def parse_storage_options(text: str | None) -> dict:
    """``--storage-options`` (or ``MIPKIT_STORAGE_OPTIONS``): a JSON object for the fsspec filesystem."""
    text = text if text is not None else os.environ.get(STORAGE_OPTIONS_ENV)
    if not text:
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        value = None
    if not isinstance(value, dict):
        raise MipkitError(
            '--storage-options must be a JSON object, e.g. \'{"client_kwargs": {"endpoint_url": "http://host:9000"}}\''
        )
    return value


def _protocol(url: str) -> str | None:
    head, sep, _ = url.partition("://")
    return head.lower() if sep and head.isidentifier() else None


@dataclass(frozen=True)
class Location:
    """A file or folder: ``url`` is a local path or ``protocol://...``; ``options`` go to fsspec."""

    url: str
    options: dict = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        url = str(self.url)
        if _protocol(url) in (None, "file", "local"):
            url = os.path.abspath(os.path.expanduser(url.split("://", 1)[-1]))
        else:
            url = url.rstrip("/")
        object.__setattr__(self, "url", url)

    # --- identity -------------------------------------------------------------------------
    @property
    def protocol(self) -> str:
        return _protocol(self.url) or "file"

    @property
    def is_local(self) -> bool:
        return self.protocol == "file"

    @property
    def local_path(self) -> Path:
        if not self.is_local:
            raise MipkitError(f"{self.display} is not on a local disk; this step needs a local folder")
        return Path(self.url)

    @property
    def name(self) -> str:
        return posixpath.basename(self.url.rstrip("/")) or self.url

    @property
    def display(self) -> str:
        """What messages show: the URL of a store (no credentials are part of it), the name of a local folder."""
        return self.url if not self.is_local else self.name

    def __str__(self) -> str:
        return self.url

    def __fspath__(self) -> str:
        return str(self.local_path)

    def __truediv__(self, part: str) -> Location:
        return Location(posixpath.join(self.url, str(part)), self.options)

    @property
    def parent(self) -> Location:
        return Location(posixpath.dirname(self.url), self.options)

    def with_name(self, name: str) -> Location:
        return self.parent / name

    @cached_property
    def fs(self):
        import fsspec

        if self.is_local:
            return fsspec.filesystem("file")
        return fsspec.filesystem(self.protocol, **self.options)

    @property
    def path(self) -> str:
        """The path inside ``fs`` (no protocol)."""
        return self.url if self.is_local else self.url.split("://", 1)[1]

    def __reduce__(self):  # pickles for Ray / process pools without the filesystem object
        return (Location, (self.url, self.options))

    # --- reading ----------------------------------------------------------------------------
    def exists(self) -> bool:
        return self.fs.exists(self.path)

    def is_file(self) -> bool:
        return self.fs.isfile(self.path)

    def is_dir(self) -> bool:
        return self.fs.isdir(self.path)

    def read_bytes(self) -> bytes:
        return self.fs.cat_file(self.path)

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.read_bytes().decode(encoding)

    def open(self, mode: str = "rb", **kwargs):
        return self.fs.open(self.path, mode, **kwargs)

    def glob(self, pattern: str) -> list[Location]:
        """Children matching ``pattern`` (one level), sorted; a missing folder has none."""
        self.invalidate()
        found = self.fs.glob(posixpath.join(self.path, pattern))
        return sorted(self._child(p) for p in found)

    def iterdir(self) -> list[Location]:
        if not self.is_dir():
            return []
        return sorted(self._child(p) for p in self.fs.ls(self.path, detail=False))

    def _child(self, fs_path: str) -> Location:
        return Location(fs_path if self.is_local else f"{self.protocol}://{fs_path}", self.options)

    def __lt__(self, other: Location) -> bool:
        return self.url < other.url

    def invalidate(self) -> None:
        """Forget cached listings: another worker may have written here."""
        self.fs.invalidate_cache(self.path)

    # --- writing ----------------------------------------------------------------------------
    def mkdir(self) -> None:
        """A folder (and its parents); object stores have no folders, so nothing to do there."""
        if self.is_local:
            Path(self.url).mkdir(parents=True, exist_ok=True)

    def write_bytes(self, data: bytes) -> None:
        if self.is_local:
            from mipkit.core.files import write_atomic

            Path(self.url).parent.mkdir(parents=True, exist_ok=True)
            write_atomic(Path(self.url), data)
        else:
            self.fs.pipe_file(self.path, data)  # one PUT: the object appears whole or not at all
            self.invalidate()

    def write_text(self, text: str) -> None:
        self.write_bytes(text.encode("utf-8"))

    def write_json(self, data) -> None:
        self.write_bytes(json.dumps(data, indent=2, sort_keys=False).encode())

    def upload(self, local_file: Path) -> None:
        """Copy a finished local file here, all or nothing."""
        if self.is_local:
            Path(self.url).parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(self.url + ".tmp")
            shutil.copyfile(local_file, tmp)
            os.replace(tmp, self.url)
        else:
            self.fs.put_file(str(local_file), self.path)
            self.invalidate()

    def unlink(self, missing_ok: bool = True) -> None:
        try:
            self.fs.rm_file(self.path)
        except FileNotFoundError:
            if not missing_ok:
                raise
        if not self.is_local:
            self.invalidate()

    def rmtree(self) -> None:
        """Remove a folder (a prefix on an object store) and everything in it; absent is fine."""
        if self.is_local:
            shutil.rmtree(self.url, ignore_errors=True)
            return
        try:
            self.fs.rm(self.path, recursive=True)
        except FileNotFoundError:
            pass
        self.invalidate()


def upload_tree(local: Path, target: Location, last: tuple[str, ...] = ()) -> None:
    """Copy a local folder to ``target`` file by file (each appears whole); the files named in ``last``
    (relative paths, e.g. ``dataset_dict.json``) go after every other one."""
    files = sorted(p for p in Path(local).rglob("*") if p.is_file())
    files.sort(key=lambda p: p.relative_to(local).as_posix() in last)
    for path in files:
        (target / path.relative_to(local).as_posix()).upload(path)


def copy_tree(source: Location, target: Location) -> None:
    """Copy every file under ``source`` to the same place under ``target`` (one filesystem; a server-side copy
    on a store). What ``target`` held before is not removed."""
    source.invalidate()
    for path in sorted(source.fs.find(source.path)):
        relative = posixpath.relpath(path, source.path)
        source.fs.copy(path, (target / relative).path)
    target.invalidate()


def as_location(value, options: dict | None = None) -> Location:
    """A ``Location`` from a path, a URL or a ``Location`` (whose options are kept unless given)."""
    if isinstance(value, Location):
        return value if options is None else Location(value.url, options)
    return Location(str(value), options or {})


def is_url(value: str) -> bool:
    """``s3://...``, ``gs://...`` and the like (``file://`` counts as local)."""
    return _protocol(str(value)) not in (None, "file", "local")


def load_dataset_dict(location: Location):
    """``datasets.load_from_disk`` for a local folder or a store (``storage_options`` from the location)."""
    from datasets import load_from_disk
    from datasets.fingerprint import get_temporary_cache_files_directory

    if location.is_local:
        return load_from_disk(location.url)
    # A fresh copy each time: datasets downloads a URL to one fixed temporary path per process and, loading
    # it again, would read the first copy. Its temporary folder is removed when the process exits.
    local = Path(get_temporary_cache_files_directory()) / f"store-{os.urandom(8).hex()}"
    location.invalidate()
    location.fs.get(location.path, str(local), recursive=True)
    return load_from_disk(str(local))


def local_state_dir(where: Location, purpose: str) -> Path:
    """A folder on this machine for what an object-store output must keep on local disk (gate state,
    private scratch files): in the user's cache, named by a hash of the URL so no URL lands on disk."""
    digest = hashlib.sha256(where.url.encode()).hexdigest()[:24]
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mipkit" / purpose / digest
