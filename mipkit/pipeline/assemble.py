"""Stage 4, write: assemble committed shards into a Hugging Face ``DatasetDict`` on disk.

One streaming pass over the shard Parquet files routes each row to its split (by source) and encodes
the emotion label; ``datasets`` then casts the features (Image, Audio, ClassLabel) and saves. The
new splits replace the old ones only once they are complete.
"""

from __future__ import annotations

import os
import shutil
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from mipkit.config.recipe import Recipe
from mipkit.config.taxonomy import Taxonomy
from mipkit.core.errors import MipkitError
from mipkit.core.files import save_dataset_dict, swap_in_dataset
from mipkit.core.ownership import check_replaceable, read_marker, write_marker
from mipkit.core.paths import BUILD_DIR
from mipkit.core.records import SPLITS
from mipkit.pipeline.shard import PAIRS_FILE, STATS_FILE, shards_root


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


def write_model_labels(build_folder: Path, rows: list[dict]) -> Path:
    """Record labels a model gave (``mipkit label``) so that re-assembling the build keeps them.

    ``rows``: ``pair_id``, ``emotion`` (class name or None), ``emotion_score``, ``emotion_source``,
    ``dropped`` (removed by ``--drop``). Written to a temporary name and moved into place, which
    also replaces (never writes through) a hard-linked earlier file.
    """
    path = Path(build_folder) / MODEL_LABELS_FILE
    tmp = path.with_name(path.name + ".tmp")
    pq.write_table(pa.Table.from_pylist(rows, schema=_MODEL_LABELS_SCHEMA), tmp)
    os.replace(tmp, path)
    return path


def _model_labels(out_dir: Path) -> dict[str, tuple]:
    path = Path(out_dir) / BUILD_DIR / MODEL_LABELS_FILE
    if not path.is_file():
        return {}
    table = pq.read_table(path)
    columns = [table[c].to_pylist() for c in _MODEL_LABELS_SCHEMA.names]
    return {row[0]: row[1:] for row in zip(*columns)}


def _apply_model_labels(table: pa.Table, overlay: dict[str, tuple]) -> pa.Table:
    """Model labels for rows without a manifest/AudioSet label; rows dropped by the labeller go."""
    ids, sources = table["pair_id"].to_pylist(), table["emotion_source"].to_pylist()
    emotions, scores = table["emotion"].to_pylist(), table["emotion_score"].to_pylist()
    keep = []
    for i, pair_id in enumerate(ids):
        hit = overlay.get(pair_id)
        if hit is not None and sources[i] is None:  # never over a label that came with the data
            emotions[i], scores[i], sources[i], dropped = hit
            if dropped:
                continue
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


def committed_pair_files(out_dir: Path) -> list[Path]:
    return [
        d / PAIRS_FILE
        for d in sorted(shards_root(out_dir).glob("[0-9]*"))
        if (d / STATS_FILE).is_file() and (d / PAIRS_FILE).is_file()
    ]


def assemble(out_dir: Path, recipe: Recipe, taxonomy: Taxonomy, split_of: dict[str, str]) -> dict[str, int]:
    """Write ``OUT/{dataset_dict.json,train,validation,test}``; returns rows per split.

    ``split_of`` maps every source id to its split (``splits.plan_splits``)."""
    import datasets
    from datasets import Dataset

    datasets.disable_progress_bars()  # our own progress covers the build; theirs would interleave
    out_dir = Path(out_dir)
    files = committed_pair_files(out_dir)
    work = out_dir / BUILD_DIR / "assemble"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    label_index = {name: i for i, name in enumerate(taxonomy.names)}
    features = dataset_features(recipe, taxonomy)
    columns = list(features)

    overlay = _model_labels(out_dir)
    writers: dict[str, pq.ParquetWriter] = {}
    rows: Counter = Counter()
    for path in files:
        for batch in pq.ParquetFile(path).iter_batches(batch_size=256):
            table = pa.Table.from_batches([batch])
            if overlay:
                table = _apply_model_labels(table, overlay)
            split_col = [split_of[s] for s in table["source_id"].to_pylist()]
            emotion_col = pa.array(
                [label_index.get(e) if e is not None else None for e in table["emotion"].to_pylist()], pa.int64()
            )
            table = table.set_column(table.column_names.index("emotion"), "emotion", emotion_col).append_column(
                "split", pa.array(split_col, pa.string())
            )
            table = table.select([c for c in columns])
            for split in SPLITS:
                part = table.filter(pa.compute.equal(table["split"], split))
                if part.num_rows:
                    if split not in writers:
                        writers[split] = pq.ParquetWriter(work / f"{split}.parquet", part.schema, compression="none")
                    writers[split].write_table(part)
                    rows[split] += part.num_rows
    for writer in writers.values():
        writer.close()

    splits = {}
    for split in SPLITS:
        if rows[split]:
            splits[split] = Dataset.from_parquet(
                str(work / f"{split}.parquet"), features=features, cache_dir=str(work / "cache"), split="train"
            )
        else:
            splits[split] = Dataset.from_dict({c: [] for c in columns}, features=features)
    save_splits(out_dir, splits, work)
    return {split: rows[split] for split in SPLITS}


def save_splits(out_dir: Path, splits: dict, work: Path) -> None:
    """The one way every build kind writes its ``DatasetDict``: staged under ``work``, then swapped in.

    Every split gets at least one data file (with none, datasets 5.2 saves a split that
    load_from_disk cannot read back), and only split folders of this build are replaced."""
    from datasets import DatasetDict

    owner = read_marker(out_dir)
    if owner is None:
        raise MipkitError(
            f"{out_dir.name!r} is not a mipkit build folder (no owner marker); pass the --out folder of a build"
        )
    for split in SPLITS:
        check_replaceable(out_dir / split, owner)
    staged = work / "dataset"
    save_dataset_dict(DatasetDict(splits), staged)
    for split in splits:  # the new splits belong to this build: a later run may replace them
        write_marker(staged / split, owner)
    swap_in_dataset(staged, out_dir, SPLITS)
    shutil.rmtree(work, ignore_errors=True)
