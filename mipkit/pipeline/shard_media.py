"""One copy of the media: once a complete build is assembled, shards keep their rows but not their media.

Each shard's ``pairs.parquet`` keeps every row (ids, labels, metadata) and ``status.jsonl`` /
``stats.json`` stay as they were; the audio and image bytes of the rows the dataset holds live only
in the dataset's Arrow files. A row whose ``audio`` is null has its media in the dataset.

* ``drop_media`` (after a complete assembly) first records in ``build/shard_media.json`` which
  dataset files hold each shard's rows, then rewrites each shard without the media of those rows
  (rows a model label dropped keep theirs: the dataset lacks them). Each rewrite is one whole file,
  so a kill leaves every shard either as it was or dropped; the rerun finishes the drop.
* ``restore_media`` (before an assembly changes the dataset: new labels, a retried or new shard)
  puts the media back into the shards from the current dataset, which may then be replaced as
  before; the drop follows the new assembly. A shard whose media cannot be found is un-committed.
* ``check_media_home`` (before shards run) un-commits the shards whose media the dataset no longer
  holds (a deleted dataset or split), so this run fetches them again: never a pair without audio.
"""

from __future__ import annotations

import json
import shutil

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mipkit.core import ui
from mipkit.core.errors import MipkitError
from mipkit.core.paths import BUILD_DIR
from mipkit.core.records import SPLITS
from mipkit.core.storage import Location, as_location
from mipkit.pipeline.shard import (
    PAIR_SCHEMA,
    PAIRS_FILE,
    REOPENED_FILE,
    STATS_FILE,
    scratch_dir,
    shards_root,
    write_parquet,
)

MEDIA_FILE = "shard_media.json"  # OUT/build/: the dataset files that hold each shard's media
MEDIA_COLUMNS = ("audio", "image")


def dropped_by_overlay(source: str | None, hit: tuple | None) -> bool:
    """A model label (``mipkit label --drop``) removes the row, never over a label that came with the data."""
    return hit is not None and source is None and bool(hit[3])


def _json(path: Location) -> dict | None:
    try:
        return json.loads(path.read_text()) if path.is_file() else None
    except ValueError:
        return None


def missing_media(pairs_file: Location) -> int:
    """Rows of a shard file whose media are not in it, from the Parquet footer (no media read)."""
    with pairs_file.open("rb") as handle:
        meta = pq.ParquetFile(handle).metadata
        columns = (
            [meta.row_group(0).column(i).path_in_schema for i in range(meta.num_columns)] if meta.num_row_groups else []
        )
        if "audio.bytes" not in columns:
            return 0
        at, total = columns.index("audio.bytes"), 0
        for group in range(meta.num_row_groups):
            stats = meta.row_group(group).column(at).statistics
            if stats is None or not stats.has_null_count:  # a writer without statistics: read the small column
                handle.seek(0)
                return pq.read_table(handle, columns=["audio.path"]).column(0).null_count
            total += stats.null_count
    return total


def _read_pairs(path: Location) -> pa.Table:
    with path.open("rb") as handle:
        return pq.read_table(handle, schema=PAIR_SCHEMA)


def _read_arrow(path: Location) -> pa.Table:
    """One split file of the dataset (an Arrow stream); memory-mapped locally, so only what is used is read."""
    if path.is_local:
        return pa.ipc.open_stream(pa.memory_map(path.url)).read_all()
    with path.open("rb") as handle:
        return pa.ipc.open_stream(handle).read_all()


def _needs_media(pairs_file: Location, overlay: dict) -> bool:
    """Whether a shard lacks the media of a row the assembly writes (rows a model label dropped need none)."""
    if not missing_media(pairs_file):
        return False
    with pairs_file.open("rb") as handle:
        table = pq.read_table(handle, columns=["pair_id", "emotion_source", "audio.path"])
    ids, sources, paths = (table.column(i).to_pylist() for i in range(3))
    return any(a is None and not dropped_by_overlay(s, overlay.get(p)) for p, s, a in zip(ids, sources, paths))


def _dataset_layout(out: Location) -> dict[str, tuple[str | None, list[str]]] | None:
    """Each split's fingerprint and data files, or None when the dataset is not whole (deleted, half written)."""
    if not (out / "dataset_dict.json").is_file():
        return None
    layout = {}
    for split in SPLITS:
        state = _json(out / split / "state.json")
        if state is None:
            return None
        layout[split] = (state.get("_fingerprint"), [f["filename"] for f in state.get("_data_files", [])])
    present = {(split, p.name) for split in SPLITS for p in (out / split).glob("*.arrow")}
    if any((split, name) not in present for split, (_, names) in layout.items() for name in names):
        return None
    return layout


class _DatasetMedia:
    """Finds the media of given pairs in the current dataset: in the files the record names for their
    shard when the dataset is the one recorded, else (``mipkit label`` rewrote it) by one index of all files."""

    def __init__(self, out: Location, record: dict) -> None:
        self.out, self.record, self.layout = out, record, _dataset_layout(out)
        key = str(record.get("dataset_key", ""))[:16]
        self.recorded = self.layout is not None and all(fp == key for fp, _ in self.layout.values())
        self.index: dict[str, Location] | None = None

    def _files(self, shard: str, wanted: set[str]) -> list[Location]:
        if self.layout is None:
            return []
        if self.recorded:
            return [self.out / split / name for split, name in self.record.get("shards", {}).get(shard, {}).items()]
        if self.index is None:
            self.index = {}
            for split, (_, names) in self.layout.items():
                for name in names:
                    path = self.out / split / name
                    self.index.update(dict.fromkeys(_read_arrow(path)["pair_id"].to_pylist(), path))
        return sorted({self.index[p] for p in wanted if p in self.index})

    def find(self, shard: str, wanted: set[str]) -> pa.Table:
        """``pair_id``, ``audio``, ``image`` of the wanted pairs found (image null for audio-only builds)."""
        wanted_ids = pa.array(sorted(wanted), pa.string())
        parts = []
        for path in self._files(shard, wanted):
            table = _read_arrow(path)
            table = table.filter(pc.is_in(table["pair_id"], value_set=wanted_ids))
            if "image" not in table.column_names:
                table = table.append_column("image", pa.nulls(table.num_rows, PAIR_SCHEMA.field("image").type))
            parts.append(table.select(["pair_id", *MEDIA_COLUMNS]).cast(_MEDIA_SCHEMA))
        return pa.concat_tables(parts) if parts else _MEDIA_SCHEMA.empty_table()


_MEDIA_SCHEMA = pa.schema([PAIR_SCHEMA.field("pair_id"), PAIR_SCHEMA.field("audio"), PAIR_SCHEMA.field("image")])


def restore_media(out_dir: Location, pairs_files: list[Location], overlay: dict) -> None:
    """Put back into each shard the media of the rows the next assembly writes, taken from the dataset.

    Run before an assembly deletes or rewrites any dataset file. A shard whose media the dataset lacks
    is un-committed (the next run fetches it again) and the run stops with one line saying so."""
    out = as_location(out_dir)
    record = _json(out / BUILD_DIR / MEDIA_FILE)
    if record is None:  # nothing was ever dropped here
        return
    media, lost, scratch = _DatasetMedia(out, record), [], None
    try:
        for path in pairs_files:
            if not missing_media(path):
                continue
            table = _read_pairs(path)
            ids, sources = table["pair_id"].to_pylist(), table["emotion_source"].to_pylist()
            absent = table["audio"].is_null().to_pylist()
            wanted = {p for p, s, a in zip(ids, sources, absent) if a and not dropped_by_overlay(s, overlay.get(p))}
            if not wanted:
                continue
            found = media.find(path.parent.name, wanted)
            if len(set(found["pair_id"].to_pylist()) & wanted) < len(wanted):
                lost.append(path.parent)
                continue
            at = pc.index_in(table["pair_id"], value_set=found["pair_id"])
            fill = pc.is_valid(at)
            for name in MEDIA_COLUMNS:  # only rows without media are filled; a row's own media is never replaced
                taken = found[name].take(pc.fill_null(at, 0))
                merged = pc.if_else(pc.and_(fill, pc.is_null(table[name])), taken, table[name])
                table = table.set_column(table.column_names.index(name), name, merged)
            if scratch is None:  # first: the drop after this assembly must run again, even for the same plan
                (out / BUILD_DIR / MEDIA_FILE).write_json({**record, "dropped": False})
                scratch = scratch_dir("media", out)
            write_parquet(table, path, scratch)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    if lost:
        for folder in lost:
            (folder / STATS_FILE).unlink()
        raise MipkitError(
            f"the dataset in {out.display!r} lacks the audio of {len(lost)} shard(s) whose media live only there "
            f"(e.g. shard {lost[0].name}; changed since it was assembled?); they are fetched again: "
            "run the same command again"
        )


def drop_media(out_dir: Location, assembly: dict, overlay: dict) -> int:
    """After a complete assembly (``assembly``: its record), drop from the shards the media the dataset
    holds; returns how many shard files were rewritten. Does nothing unless the dataset in ``OUT`` is
    whole and is the one that assembly wrote."""
    out = as_location(out_dir)
    key = assembly.get("key")
    target = out / BUILD_DIR / MEDIA_FILE
    done = _json(target)
    if not key or not assembly.get("complete") or (done and done.get("dataset_key") == key and done.get("dropped")):
        return 0  # not a finished assembly, or its drop is done (the no-op rerun)
    layout = _dataset_layout(out)
    if layout is None or any(fp != key[:16] for fp, _ in layout.values()):
        return 0
    shards = assembly.get("shards", {})
    target.write_json({"dataset_key": key, "dropped": False, "shards": shards})  # first: where the media go
    rewritten, scratch = 0, scratch_dir("media", out)
    try:
        for name in shards:
            path = shards_root(out) / name / PAIRS_FILE
            table = _read_pairs(path)
            ids, sources = table["pair_id"].to_pylist(), table["emotion_source"].to_pylist()
            held = pa.array([not dropped_by_overlay(s, overlay.get(p)) for p, s in zip(ids, sources)], pa.bool_())
            held = pc.and_(held, pc.is_valid(table["audio"]))
            if not pc.any(held).as_py():
                continue
            for column in MEDIA_COLUMNS:
                none = pa.scalar(None, table.schema.field(column).type)
                table = table.set_column(
                    table.column_names.index(column), column, pc.if_else(held, none, table[column])
                )
            write_parquet(table, path, scratch)
            rewritten += 1
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    target.write_json({"dataset_key": key, "dropped": True, "shards": shards})
    return rewritten


def check_media_home(out_dir: Location, overlay: dict) -> int:
    """Un-commit every shard whose media live only in a dataset that is gone (deleted, or a split of it),
    so the build fetches it again this run; returns how many. Cheap when the dataset is whole."""
    out = as_location(out_dir)
    record = _json(out / BUILD_DIR / MEDIA_FILE)
    if record is None:
        return 0
    media = _DatasetMedia(out, record)
    if media.layout is not None and not media.recorded:  # rewritten (mipkit label): looked up when restored
        return 0
    present = {(s, n) for s, (_, names) in (media.layout or {}).items() for n in names}
    redo = []
    for shard, targets in record.get("shards", {}).items():
        if media.layout is not None and all((s, n) in present for s, n in targets.items()):
            continue
        folder = shards_root(out) / shard
        if (folder / PAIRS_FILE).is_file() and _needs_media(folder / PAIRS_FILE, overlay):
            (folder / STATS_FILE).unlink()
            (folder / REOPENED_FILE).unlink()  # a --retry-failed shard keeps nothing: it is built whole
            redo.append(shard)
    if redo:
        ui.console.print(
            f"{len(redo)} shard(s) kept their media only in the dataset, which is gone or incomplete: "
            "fetching them again"
        )
    return len(redo)
