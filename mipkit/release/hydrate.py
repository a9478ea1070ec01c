"""What a release may carry, and ``mipkit hydrate``: rebuild the media of a metadata-only release.

A metadata-only release holds ids, times, labels and provenance (``METADATA_COLUMNS``), which is what
can usually be redistributed. ``hydrate`` turns its rows back into per-source requests with explicit
windows and runs the normal build pipeline on them, so every rebuilt pair keeps its ``pair_id``
(the release's ``source_id`` + start in ms) and every pair that cannot be rebuilt gets its status
(``unavailable``, ``too_short`` ...) in ``OUT/build``.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mipkit.config.taxonomy import Taxonomy
from mipkit.core.errors import MipkitError
from mipkit.core.ids import (  # noqa: F401 - CREDENTIALS_IN_URL and redact_url are re-exported
    CREDENTIALS_IN_URL,
    canonical_url,
    pair_id_for,
    redact_url,
    sanitize_id,
    source_id_for,
)
from mipkit.core.records import BAD_ROW, DUPLICATE, SPLITS, SampleStatus, SourceRequest, Window
from mipkit.core.storage import Location, as_location, is_url, load_dataset_dict, local_state_dir
from mipkit.kinds.mipnet import is_blank, optional_text, parse_start
from mipkit.pipeline.status import BUILD_FILE, build_dir

MEDIA_COLUMNS = ("image", "audio")
METADATA_COLUMNS = (
    "pair_id",
    "source_id",
    "source_url",
    "start_s",
    "end_s",
    "emotion",
    "emotion_source",
    "emotion_score",
    "title",
    "uploader",
    "license",
    "split",
)
REQUIRED_COLUMNS = ("source_url", "start_s")  # what hydrate needs of a release
PAIR_COLUMNS = (
    "pair_id",
    "source_id",
    "source_url",
    "start_s",
    "emotion",
    "emotion_source",
    "license",
)  # what a card is made of


# --------------------------------------------------------------------------- privacy of a release


# CREDENTIALS_IN_URL and redact_url live in mipkit.core.ids (the browser and the search results use them too).


def private_strings(dataset_dir: Location | Path, build: dict) -> list[str]:
    """Values that must never appear in a release: local paths, the cookies file, the proxy, the Hub token,
    the storage options of an object store (keys, secrets, endpoints)."""
    found: set[str] = set()
    where = as_location(dataset_dir)
    local = [where.local_path, where.local_path.parent] if where.is_local else []
    found.update(_option_strings(where.options))
    for path in (*local, Path.home()):
        if len(path.parts) >= 3:  # '/home/alice' or a build folder; not '/' or '/tmp', which identify nobody
            found.add(str(path))
    ytdlp = build.get("recipe", {}).get("ytdlp", {})
    for key in ("cookiefile", "proxy", "cookies_from_browser"):
        value = str(ytdlp.get(key) or "")
        if value and value != "<set>":  # build.json redacts both; an older or hand-made one may not
            found.add(value)
            if key == "cookiefile":
                found.add(Path(value).name)
            for userinfo in re.findall(r"://([^/@\s]+)@", value):
                found.update([userinfo, *userinfo.split(":", 1)])
    from huggingface_hub import get_token

    token = get_token()
    if token:
        found.add(token)
    return sorted((s for s in found if len(s) >= 4), key=len, reverse=True)


def scrub(text: str, secrets: list[str]) -> str:
    """Replace every private value by ``<redacted>`` and drop any ``user:password@`` left in URLs."""
    for secret in secrets:
        text = text.replace(secret, "<redacted>")
    return re.sub(r"(://)[^/@\s]+@", r"\1", text)


# --------------------------------------------------------------------------- what a release carries


def _option_strings(options: dict) -> list[str]:
    """Every string inside ``--storage-options`` (credentials, endpoints), however nested."""
    if isinstance(options, dict):
        return [s for value in options.values() for s in _option_strings(value)]
    return [options] if isinstance(options, str) and len(options) >= 4 else []


def load_build(dataset_dir: Location | Path) -> tuple[Any, dict]:
    """The built DatasetDict and its ``build/build.json``; one clear error if ``dataset_dir`` is not a build."""
    dataset_dir = as_location(dataset_dir)
    if not (dataset_dir / "dataset_dict.json").is_file() or not (build_dir(dataset_dir) / BUILD_FILE).is_file():
        raise MipkitError(
            f"{dataset_dir.display!r} is not a finished mipkit build (needs dataset_dict.json and build/{BUILD_FILE}); "
            "pass the --out folder of `mipkit build`"
        )
    return load_dataset_dict(dataset_dir), json.loads((build_dir(dataset_dir) / BUILD_FILE).read_text())


def release_splits(dataset: Any, metadata_only: bool) -> dict[str, Any]:
    """The non-empty splits to publish (``load_dataset`` rejects empty data files), media dropped for
    metadata-only. Credentials in source URLs are removed when the shards are written."""
    import pyarrow.compute as pc

    from mipkit.core import ui

    splits = {}
    for split in [s for s in SPLITS if s in dataset] + [s for s in dataset if s not in SPLITS]:
        ds = dataset[split]
        missing = [c for c in PAIR_COLUMNS if c not in ds.column_names]
        if missing:
            raise MipkitError(
                f"this build has no {', '.join(missing)} column: push-to-hub publishes image-music pair builds "
                "(`mipkit build mipnet`, `build audioset-mood`, `hydrate`); use datasets' own push_to_hub for other builds"
            )
        if not len(ds):
            continue
        if metadata_only:
            ds = ds.select_columns([c for c in METADATA_COLUMNS if c in ds.column_names])
        if pc.any(pc.match_substring_regex(ds.data.column("source_url"), CREDENTIALS_IN_URL)).as_py():
            ui.console.print(
                f"[yellow]{split}: credentials removed from source URLs (user:password@ is never published)[/yellow]"
            )
        splits[split] = ds
    if not splits:
        raise MipkitError("the build holds no pair in any split; nothing to publish (see `mipkit status` for why)")
    return splits


# --------------------------------------------------------------------------- reading a release


@dataclass
class Release:
    """A release's rows (media columns are never read) and the files that identify it."""

    name: str
    rows: list[dict[str, Any]]
    label_names: list[str] | None  # ClassLabel names; None when labels are stored as text
    inputs: list[Path]


def _label_names(features) -> list[str] | None:
    emotion = features.get("emotion") if features is not None else None
    return list(emotion.names) if emotion is not None and hasattr(emotion, "names") else None


def _check_columns(names: list[str], where: str) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in names]
    if missing:
        raise MipkitError(
            f"{where} has no {', '.join(missing)} column; pass a release written by `mipkit push-to-hub` "
            "(--metadata-only, on the Hub or with --to-folder)"
        )


def read_local_release(path: Path) -> Release:
    """A release folder (``data/*.parquet`` as written by ``--to-folder``), a folder of Parquet files, or one file."""
    import pyarrow.parquet as pq
    from datasets import Features

    path = Path(path)
    if path.is_file():
        files = [path]
    else:
        files = sorted((path / "data").glob("*.parquet")) or sorted(path.glob("*.parquet"))
    if not files:
        raise MipkitError(
            f"{path.name!r} holds no Parquet files (expected data/*.parquet); pass a release folder written by "
            "`mipkit push-to-hub --to-folder`, or a Hub dataset id"
        )
    rows: list[dict[str, Any]] = []
    label_names = None
    for file in files:
        schema = pq.read_schema(file)
        _check_columns(schema.names, f"release file {file.name}")
        label_names = label_names or _label_names(Features.from_arrow_schema(schema))
        columns = [c for c in METADATA_COLUMNS if c in schema.names]
        rows += pq.read_table(file, columns=columns).to_pylist()
    return Release(name=path.name, rows=rows, label_names=label_names, inputs=files)


def read_hub_release(repo_id: str) -> Release:
    """A release on the Hub, through ``datasets.load_dataset`` (token and cache as usual)."""
    import datasets

    try:
        dataset = datasets.load_dataset(repo_id)
    except Exception as exc:  # noqa: BLE001 - any failure here means the same thing to the user
        reason = " ".join(str(exc).split())[:200]
        raise MipkitError(
            f"cannot load release {repo_id!r} from the Hugging Face Hub ({type(exc).__name__}: {reason}); check the id, "
            "your login for private datasets and the network, or pass a local release folder"
        ) from None
    rows: list[dict[str, Any]] = []
    inputs: list[Path] = []
    label_names = None
    for split, ds in dataset.items():
        _check_columns(ds.column_names, f"release {repo_id} ({split})")
        label_names = label_names or _label_names(ds.features)
        rows += ds.select_columns([c for c in METADATA_COLUMNS if c in ds.column_names]).data.to_pylist()
        inputs += [Path(f["filename"]) for f in ds.cache_files]
    return Release(name=repo_id, rows=rows, label_names=label_names, inputs=inputs)


def read_store_release(where: Location) -> Release:
    """A release folder on a store (``push-to-hub --to-folder s3://...``): its Parquet files are copied to
    local disk (the user's cache, named by a hash of the URL, no URL on disk), then read as a local one."""
    files = where.glob("data/*.parquet") or where.glob("*.parquet")
    if not files:
        raise MipkitError(
            f"{where.display!r} holds no Parquet files (expected data/*.parquet); pass a release written by "
            "`mipkit push-to-hub --to-folder`, or a Hub dataset id"
        )
    local = local_state_dir(where, "releases") / "data"
    shutil.rmtree(local, ignore_errors=True)  # a fresh copy: the release may have been replaced
    local.mkdir(parents=True)
    for file in files:
        where.fs.get_file(file.path, str(local / file.name))
    release = read_local_release(local.parent)
    release.name = where.name
    return release


def open_release(ref: str, storage_options: dict | None = None) -> Release:
    """A store URL, a local path when one exists, else a Hub dataset id."""
    if is_url(ref):
        return read_store_release(Location(ref, storage_options or {}))
    if Path(ref).exists():
        return read_local_release(Path(ref))
    if ref.startswith((".", "/", "~")) or ref.count("/") > 1:
        raise MipkitError(
            f"release {ref!r} does not exist; pass a release folder written by `mipkit push-to-hub --to-folder` or a Hub id 'owner/name'"
        )
    return read_hub_release(ref)


# --------------------------------------------------------------------------- rows -> requests


def _emotion(value: Any, label_names: list[str] | None, taxonomy: Taxonomy) -> str | None:
    if is_blank(value) or (isinstance(value, int) and value < 0):
        return None
    if isinstance(value, int):
        if not label_names or value >= len(label_names):
            raise ValueError(f"emotion {value} has no class name in the release")
        value = label_names[value]
    return taxonomy.normalize(str(value))


def _parse(row: dict[str, Any], label_names: list[str] | None, taxonomy: Taxonomy) -> tuple[str, str, Window] | str:
    """``(source_id, url, window)`` for a good row, else the reason it cannot be rebuilt."""
    url = row.get("source_url")
    if is_blank(url):
        return "empty source_url"
    try:
        url = canonical_url(str(url))  # a release is untrusted input: its URLs are checked like manifest rows
        start = parse_start(row.get("start_s"))
    except ValueError as exc:
        return str(exc)
    source_id = row.get("source_id") or source_id_for(url)
    if sanitize_id(source_id, 200) != source_id:
        return f"source_id {source_id!r} is not a safe id ([A-Za-z0-9_-] only)"
    if not is_blank(row.get("pair_id")) and row["pair_id"] != pair_id_for(source_id, start):
        return f"pair_id {row['pair_id']!r} does not match source_id and start_s"
    try:
        emotion = _emotion(row.get("emotion"), label_names, taxonomy)
    except ValueError as exc:
        return str(exc)
    score = row.get("emotion_score")
    window = Window(
        row=0,
        start_s=round(start, 3),
        emotion=emotion,
        title=optional_text(row, "title"),
        license=optional_text(row, "license"),
        emotion_source=optional_text(row, "emotion_source") if emotion else None,
        emotion_score=float(score) if emotion and isinstance(score, (int, float)) and math.isfinite(score) else None,
    )
    return source_id, url, window


def release_reader(release: Release):
    """A pipeline reader (``BuildOptions.reader``): the release's rows grouped by source, windows explicit."""

    def read(taxonomy: Taxonomy) -> tuple[list[SourceRequest], list[SampleStatus]]:
        if release.label_names:
            unknown = [
                n for n in release.label_names if n.strip().lower() not in {c.strip().lower() for c in taxonomy.names}
            ]
            if unknown:
                raise MipkitError(
                    f"release {release.name} labels {unknown} are not in taxonomy {taxonomy.name!r}; "
                    "pass --recipe with the release's taxonomy"
                )
        sources: dict[str, SourceRequest] = {}
        seen: set[str] = set()
        problems: list[SampleStatus] = []
        for number, row in enumerate(release.rows, 1):
            parsed = _parse(row, release.label_names, taxonomy)
            url = row.get("source_url") if isinstance(row.get("source_url"), str) else None
            if isinstance(parsed, str):
                problems.append(
                    SampleStatus(
                        status=BAD_ROW, error=f"row {number}: {parsed}", pair_id=row.get("pair_id"), url=url, row=number
                    )
                )
                continue
            source_id, url, window = parsed
            window.row = number
            pair_id = pair_id_for(source_id, window.start_s)
            request = sources.setdefault(source_id, SourceRequest(source_id=source_id, url=url))
            if request.url != url:
                error = f"row {number}: source_id {source_id} has two URLs in the release"
                problems.append(SampleStatus.of_window(BAD_ROW, error, source_id, url, window.start_s, number))
            elif pair_id in seen:
                error = f"row {number}: pair {pair_id} appears twice in the release"
                problems.append(SampleStatus.of_window(DUPLICATE, error, source_id, url, window.start_s, number))
            else:
                seen.add(pair_id)
                request.windows.append(window)
        if not release.rows:
            raise MipkitError(f"release {release.name} has no rows; nothing to hydrate")
        return [s for s in sources.values() if s.windows], problems

    return read


def clip_seconds(release: Release) -> float | None:
    """The clip length the release was built with (its most common ``end_s - start_s``)."""
    lengths = Counter(
        round(r["end_s"] - r["start_s"], 3)
        for r in release.rows
        if isinstance(r.get("end_s"), (int, float)) and isinstance(r.get("start_s"), (int, float))
    )
    return lengths.most_common(1)[0][0] if lengths else None


def compare_with_release(release: Release, out: Location | Path) -> dict[str, int]:
    """How much of the release came back: pairs rebuilt, missing, and rebuilt into another split."""
    wanted = {r["pair_id"]: r.get("split") for r in release.rows if r.get("pair_id")}
    built: dict[str, str] = {}
    dataset = load_dataset_dict(as_location(out))
    for split, ds in dataset.items():
        if len(ds):  # an empty split is saved as one empty shard; its Arrow table is not read
            built.update(dict.fromkeys(ds.data.column("pair_id").to_pylist(), split))
    rebuilt = [p for p in wanted if p in built]
    return {
        "release_pairs": len(wanted),
        "rebuilt": len(rebuilt),
        "missing": len(wanted) - len(rebuilt),
        "split_changed": sum(1 for p in rebuilt if wanted[p] and built[p] != wanted[p]),
        "not_in_release": sum(1 for p in built if p not in wanted),
    }


def hydrate(
    ref: str,
    out: Location | Path,
    recipe,
    workers: int = 1,
    engine: str = "local",
    overwrite: bool = False,
    keep_shard_media: bool = False,
    ray_address: str | None = None,
    shared_fs: bool = False,
) -> tuple[dict, dict]:
    """Rebuild a release through the normal pipeline; returns the build summary and the comparison.
    A release on a store is read with ``out``'s storage options (one ``--storage-options`` for both)."""
    from mipkit.core import ui
    from mipkit.kinds.pairs import BuildOptions, build

    release = open_release(ref, as_location(out).options)
    seconds = clip_seconds(release)
    if seconds and abs(seconds - recipe.clip.seconds) > 1e-3:
        ui.console.print(
            f"release clips last {seconds:g} s: using that instead of the recipe's {recipe.clip.seconds:g} s"
        )
        recipe = recipe.with_overrides({"clip.seconds": seconds})
    # The release's split of each source is kept, so a vanished source moves no other pair.
    split_of = {r["source_id"]: r["split"] for r in release.rows if r.get("source_id") and r.get("split")}
    summary = build(
        BuildOptions(
            out=as_location(out),
            recipe=recipe,
            reader=release_reader(release),
            inputs=release.inputs,
            kind="hydrate",
            workers=workers,
            engine=engine,
            overwrite=overwrite,
            split_of=split_of,
            keep_shard_media=keep_shard_media,
            ray_address=ray_address,
            shared_fs=shared_fs,
        )
    )
    return summary, compare_with_release(release, as_location(out))
