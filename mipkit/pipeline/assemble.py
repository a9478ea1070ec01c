"""Stage 4, write: assemble committed shards into a Hugging Face ``DatasetDict`` (local or on a store).

Each clip is read once and written once. A cheap first pass reads only the small columns (ids,
labels) of every shard and plans the output: one Arrow file per shard and split, named like
``save_to_disk``'s files. Then each shard's rows go straight into its split files, one task per shard
(in this process, a process pool or Ray tasks, the same engines as the build), so no process copies
the whole dataset and the cost is linear in pairs. ``state.json`` of each split and
``dataset_dict.json`` are written last: until then the folder is not loadable, never half old and
half new. ``build/assembly.json`` records the plan, so a killed assembly resumes and keeps the files
it finished (each one appears whole: rename locally, one upload on a store).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from mipkit.config.recipe import Recipe
from mipkit.config.taxonomy import Taxonomy
from mipkit.core.errors import MipkitError
from mipkit.core.files import save_dataset_dict, swap_in_dataset
from mipkit.core.ownership import check_replaceable, read_marker, write_marker
from mipkit.core.paths import BUILD_DIR
from mipkit.core.records import SPLITS
from mipkit.core.storage import Location, as_location
from mipkit.pipeline.shard import PAIRS_FILE, STATS_FILE, done_shard_dirs, scratch_dir, write_parquet
from mipkit.pipeline.shard_media import check_media_home, drop_media, dropped_by_overlay, restore_media


def dataset_features(recipe: Recipe, taxonomy: Taxonomy):
    from datasets import Audio, ClassLabel, Features, Image, Value

    columns = {"pair_id": Value("string")}
    if recipe.clip.image:
        columns["image"] = Image()
    columns.update(
        {
            "audio": Audio(sampling_rate=recipe.clip.sample_rate),
            "emotion": ClassLabel(names=taxonomy.names),
            "emotion_source": Value("string"),
            "emotion_score": Value("float64"),
            "source_id": Value("string"),
            "source_url": Value("string"),
            "start_s": Value("float64"),
            "end_s": Value("float64"),
            "title": Value("string"),
            "uploader": Value("string"),
            "license": Value("string"),
            "split": Value("string"),
        }
    )
    return Features(columns)


MODEL_LABELS_FILE = "model_labels.parquet"
_MODEL_LABELS_SCHEMA = pa.schema(
    [
        ("pair_id", pa.string()),
        ("emotion", pa.string()),
        ("emotion_score", pa.float64()),
        ("emotion_source", pa.string()),
        ("dropped", pa.bool_()),
    ]
)


def write_model_labels(build_folder: Location | Path, rows: list[dict]) -> Location:
    """Record labels a model gave (``mipkit label``) so that re-assembling the build keeps them.

    ``rows``: ``pair_id``, ``emotion`` (class name or None), ``emotion_score``, ``emotion_source``,
    ``dropped`` (removed by ``--drop``). Written whole under a temporary name and moved into place,
    which also replaces (never writes through) a hard-linked earlier file.
    """
    target = as_location(build_folder) / MODEL_LABELS_FILE
    scratch = scratch_dir("labels")
    try:
        write_parquet(pa.Table.from_pylist(rows, schema=_MODEL_LABELS_SCHEMA), target, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return target


def _model_labels(out_dir: Location | Path) -> dict[str, tuple]:
    path = as_location(out_dir) / BUILD_DIR / MODEL_LABELS_FILE
    if not path.is_file():
        return {}
    with path.open("rb") as handle:
        table = pq.read_table(handle)
    columns = [table[c].to_pylist() for c in _MODEL_LABELS_SCHEMA.names]
    return {row[0]: row[1:] for row in zip(*columns)}


def _apply_model_labels(table: pa.Table, overlay: dict[str, tuple]) -> pa.Table:
    """Model labels for rows without a manifest/AudioSet label; rows dropped by the labeller go."""
    ids, sources = table["pair_id"].to_pylist(), table["emotion_source"].to_pylist()
    emotions, scores = table["emotion"].to_pylist(), table["emotion_score"].to_pylist()
    keep = []
    for i, pair_id in enumerate(ids):
        hit = overlay.get(pair_id)
        if dropped_by_overlay(sources[i], hit):
            continue
        if hit is not None and sources[i] is None:  # never over a label that came with the data
            emotions[i], scores[i], sources[i], _ = hit
        keep.append(i)
    for name, values, kind in (
        ("emotion", emotions, pa.string()),
        ("emotion_score", scores, pa.float64()),
        ("emotion_source", sources, pa.string()),
    ):
        table = table.set_column(table.column_names.index(name), name, pa.array(values, kind))
    return table.take(pa.array(keep, type=pa.int64()))


def column_values(dataset, name: str) -> list:
    """A plain column as a list, read from Arrow without decoding media (empty splits too)."""
    return dataset.data.column(name).to_pylist() if len(dataset) else []


def committed_pair_files(out_dir: Location | Path) -> list[Location]:
    return [d / PAIRS_FILE for d in done_shard_dirs(out_dir) if (d / PAIRS_FILE).is_file()]


ASSEMBLY_FILE = "assembly.json"
_SMALL_COLUMNS = ["pair_id", "source_id", "emotion", "emotion_score", "emotion_source"]


@dataclass
class AssemblyUnit:
    """One shard's rows, routed to one Arrow file per split (``targets``: split -> file name)."""

    index: int
    pairs_file: Location
    targets: dict[str, str]


def _read(path: Location, columns: list[str] | None = None) -> pa.Table:
    with path.open("rb") as handle:
        return pq.read_table(handle, columns=columns)


def _prepare_rows(table: pa.Table, overlay: dict, split_of: dict[str, str], label_index: dict[str, int]) -> pa.Table:
    """Model labels applied, dropped rows gone, the emotion as a class index, the split column added."""
    if overlay:
        table = _apply_model_labels(table, overlay)
    emotion = pa.array(
        [label_index.get(e) if e is not None else None for e in table["emotion"].to_pylist()], pa.int64()
    )
    split = pa.array([split_of[s] for s in table["source_id"].to_pylist()], pa.string())
    table = table.set_column(table.column_names.index("emotion"), "emotion", emotion)
    return table.append_column("split", split)


def _split_file_name(k: int, n: int) -> str:
    return f"data-{k:05d}-of-{n:05d}.arrow"


def _plan(files: list[Location], overlay, split_of, taxonomy: Taxonomy):
    """First pass, small columns only: rows per shard and split, and the label counts of the chart."""
    label_index = {name: i for i, name in enumerate(taxonomy.names)}
    per_file: list[dict[str, int]] = []
    distribution: dict[str, Counter] = {split: Counter() for split in SPLITS}
    for path in files:
        table = _prepare_rows(_read(path, _SMALL_COLUMNS), overlay, split_of, label_index)
        counts = Counter(table["split"].to_pylist())
        per_file.append(dict(counts))
        for split, label in zip(table["split"].to_pylist(), table["emotion"].to_pylist()):
            distribution[split][taxonomy.names[label] if label is not None and label >= 0 else "unlabelled"] += 1
    units, totals = [], {split: sum(c.get(split, 0) for c in per_file) for split in SPLITS}
    file_count = {split: sum(1 for c in per_file if c.get(split)) for split in SPLITS}
    seen = Counter()
    for i, (path, counts) in enumerate(zip(files, per_file)):
        targets = {}
        for split in SPLITS:
            if counts.get(split):
                targets[split] = _split_file_name(seen[split], file_count[split])
                seen[split] += 1
        if targets:
            units.append(AssemblyUnit(index=i, pairs_file=path, targets=targets))
    return units, totals, {s: dict(c) for s, c in distribution.items() if c}


def write_unit(unit: AssemblyUnit, out: Location, features_dict: dict, split_of, overlay, on_event=None) -> dict:
    """Second pass for one shard: its rows, media and all, streamed into its split files."""
    from datasets import Features

    features = Features.from_dict(features_dict)
    label_index = {name: i for i, name in enumerate(features["emotion"].names)}
    parts = {}
    table = _prepare_rows(_read(unit.pairs_file), overlay, split_of, label_index)
    for split, name in unit.targets.items():
        part = table.filter(pc.equal(table["split"], split)).select(list(features))
        if part["audio"].null_count:  # never a pair without audio (its media were neither here nor restored)
            raise MipkitError(
                f"shard {unit.pairs_file.parent.name} lacks the audio of {part['audio'].null_count} pair(s)"
            )
        _write_arrow(out / split / name, features, part)
        parts[split] = part.num_rows
    return {"shard": unit.index, "rows": parts}


def _write_arrow(target: Location, features, table: pa.Table | None) -> None:
    """One split file in ``save_to_disk``'s format (an Arrow stream carrying the features), written whole."""
    from datasets.arrow_writer import ArrowWriter

    def write(stream) -> None:
        writer = ArrowWriter(features=features, stream=stream)
        if table is not None and table.num_rows:
            writer.write_table(table)
        writer.finalize()

    if target.is_local:
        target.parent.mkdir()
        tmp = Path(target.url + ".tmp")
        with open(tmp, "wb") as stream:
            write(stream)
        tmp.replace(target.local_path)
    else:
        with target.open("wb") as stream:  # a multipart upload: the object appears when it completes
            write(stream)


def _plan_key(files: list[Location], units, features_dict, split_of, overlay_location: Location) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.url.encode())
        digest.update((path.parent / STATS_FILE).read_bytes())  # a redone shard has new stats
    if overlay_location.is_file():
        digest.update(overlay_location.read_bytes())
    digest.update(json.dumps([u.targets for u in units], sort_keys=True).encode())
    digest.update(json.dumps(features_dict, sort_keys=True).encode())
    digest.update(json.dumps(sorted(split_of.items())).encode())
    return digest.hexdigest()


def assemble(
    out_dir: Location | Path,
    recipe: Recipe,
    taxonomy: Taxonomy,
    split_of: dict[str, str],
    *,
    workers: int = 1,
    engine: str = "local",
) -> tuple[dict[str, int], dict[str, dict[str, int]]]:
    """Write ``OUT/{dataset_dict.json,train,validation,test}``; returns rows per split and the
    counts per split and emotion. ``split_of`` maps every source id to its split (``plan_splits``)."""
    import datasets

    from mipkit.pipeline.engines import run_shards

    datasets.disable_progress_bars()  # our own progress covers the build; theirs would interleave
    out = as_location(out_dir)
    owner = _owner_of(out)
    files = committed_pair_files(out)
    overlay = _model_labels(out)
    features = dataset_features(recipe, taxonomy)
    features_dict = features.to_dict()
    units, totals, distribution = _plan(files, overlay, split_of, taxonomy)
    key = _plan_key(files, units, features_dict, split_of, out / BUILD_DIR / MODEL_LABELS_FILE)
    record = out / BUILD_DIR / ASSEMBLY_FILE
    previous = json.loads(record.read_text()) if record.is_file() else {}
    if previous.get("key") == key and previous.get("complete") and _files_present(out, previous.get("files", {})):
        return totals, distribution
    for split in SPLITS:  # every refusal before any change
        check_replaceable(out / split, owner)
    restore_media(out, files, overlay)  # media that live only in the dataset go back first: it is rewritten now
    for split in SPLITS:
        write_marker(out / split, owner)  # first: a killed assembly leaves folders that are provably ours
        for partial in (out / split).glob("*.tmp"):  # a local file a kill cut short
            partial.unlink()
    (out / "dataset_dict.json").unlink()  # from here until the end the folder is not loadable
    if previous.get("key") != key:  # another plan: no file of the old one may be taken for a finished one
        for split in SPLITS:
            for stale in (out / split).glob("data-*.arrow"):
                stale.unlink()
        record.write_json({"key": key, "complete": False})
    existing = _pairs({split: {p.name for p in (out / split).glob("data-*.arrow")} for split in SPLITS})
    todo = [u for u in units if not set(u.targets.items()) <= existing]
    errors = run_shards(todo, write_unit, (out, features_dict, split_of, overlay), workers=workers, engine=engine)
    if errors:
        raise MipkitError(f"assembling the dataset failed ({errors[0]}); run the same command again to resume")

    names = {split: [u.targets[split] for u in units if split in u.targets] for split in SPLITS}
    for split in SPLITS:
        if not names[split]:  # an empty split still needs one (empty) file, or load_from_disk fails on it
            names[split] = [_split_file_name(0, 1)]
            _write_arrow(out / split / names[split][0], features, None)
        _write_split_metadata(out / split, names[split], features_dict, key)
    (out / "dataset_dict.json").write_text(json.dumps({"splits": list(SPLITS)}))
    shards = {u.pairs_file.parent.name: u.targets for u in units}  # where each shard's rows went
    record.write_json({"key": key, "complete": True, "files": names, "shards": shards})
    return totals, distribution


def drop_shard_media(out_dir: Location | Path) -> int:
    """One copy of the media: once a complete build is assembled, the shards drop what the dataset holds."""
    out = as_location(out_dir)
    record = out / BUILD_DIR / ASSEMBLY_FILE
    return drop_media(out, json.loads(record.read_text()) if record.is_file() else {}, _model_labels(out))


def check_shard_media(out_dir: Location | Path) -> int:
    """Before shards run: those whose media the dataset no longer holds are built again."""
    out = as_location(out_dir)
    return check_media_home(out, _model_labels(out))


def _files_present(out: Location, files: dict[str, list[str]]) -> bool:
    """Every file the recorded assembly wrote is still there (a deleted split folder is assembled again)."""
    names = ["dataset_dict.json"]
    for split in SPLITS:
        names += [f"{split}/{name}" for name in files.get(split, [])] + [f"{split}/state.json"]
    return all((out / name).is_file() for name in names)


def _pairs(existing: dict[str, set[str]]) -> set[tuple[str, str]]:
    return {(split, name) for split, names in existing.items() for name in names}


def _write_split_metadata(folder: Location, names: list[str], features_dict: dict, key: str) -> None:
    state = {
        "_data_files": [{"filename": name} for name in names],
        "_fingerprint": key[:16],
        "_format_columns": None,
        "_format_kwargs": {},
        "_format_type": None,
        "_output_all_columns": False,
        "_split": None,
    }
    info = {"citation": "", "description": "", "features": features_dict, "homepage": "", "license": ""}
    (folder / "dataset_info.json").write_json(info)
    (folder / "state.json").write_json(state)


def _owner_of(out: Location) -> str:
    owner = read_marker(out)
    if owner is None:
        raise MipkitError(
            f"{out.display!r} is not a mipkit build folder (no owner marker); pass the --out folder of a build"
        )
    return owner


def save_splits(out_dir: Location | Path, splits: dict, work: Path) -> None:
    """How a kind whose rows are in memory (YouTube-8M) writes its ``DatasetDict`` locally or to a store.

    Only split folders of this build are replaced; every split gets at least one data file (with none,
    datasets 5.2 saves a split that load_from_disk cannot read back); ``dataset_dict.json`` goes last."""
    out = as_location(out_dir)
    owner = _owner_of(out)
    for split in SPLITS:
        check_replaceable(out / split, owner)
    if out.is_local:  # staged beside, then swapped in
        from datasets import DatasetDict

        staged = work / "dataset"
        save_dataset_dict(DatasetDict(splits), staged)
        for split in splits:  # the new splits belong to this build: a later run may replace them
            write_marker(staged / split, owner)
        swap_in_dataset(staged, out.local_path, SPLITS)
        shutil.rmtree(work, ignore_errors=True)
        return
    # A store has no rename: dataset_dict.json goes first and comes back last, so no half is loadable.
    (out / "dataset_dict.json").unlink()
    for split in SPLITS:
        (out / split).rmtree()  # checked above: ours
    for split, dataset in splits.items():
        target = out / split
        dataset.save_to_disk(target.url, num_shards=1 if not len(dataset) else None, storage_options=out.options)
        write_marker(target, owner)
    (out / "dataset_dict.json").write_text(json.dumps({"splits": list(splits)}))
    shutil.rmtree(work, ignore_errors=True)
