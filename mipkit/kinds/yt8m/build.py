"""The YouTube-8M build: TFRecord files -> shards (one per file) -> DatasetDict.

A shard reads its file (downloading a URL into the cache first), keeps the music videos, resolves
their metadata on a few threads and commits ``OUT/build/shards/NNNNN/`` in the MIPNet layout:
``videos.arrow`` (kept rows; Arrow IPC, as Parquet's per-value levels make nested uint8 lists
slow), ``status.jsonl`` (one line per music video or bad record), ``metadata.jsonl`` (what was
learnt about each video) and ``stats.json`` last, the commit marker.
It is a build kind of the one driver (``mipkit.pipeline.driver.run_build``): its shard function and its
assembly are its own; lock, resume, ``--retry-failed``, progress and the summary are shared, so
``mipkit status OUT`` and resume behave as for ``mipkit build mipnet``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import pyarrow as pa

from mipkit.config.recipe import YtdlpConfig
from mipkit.core import records, ui
from mipkit.core.errors import MipkitError
from mipkit.core.records import SPLITS, SampleStatus
from mipkit.core.storage import Location, as_location
from mipkit.kinds.yt8m import BAD_RECORD, KINDS, NO_METADATA, NOT_MUSIC
from mipkit.kinds.yt8m.lookup import DiskCache, LookupClient
from mipkit.kinds.yt8m.metadata import (
    MetadataResolver,
    YtdlpMetadata,
    load_metadata_file,
    merge_metadata_files,
    write_metadata_jsonl,
)
from mipkit.kinds.yt8m.tfrecords import (
    TfrecordSource,
    dataset_features,
    fetch_to_cache,
    partition_of,
    read_records,
    resolve_inputs,
    shard_table,
)
from mipkit.pipeline.assemble import save_splits
from mipkit.pipeline.driver import Kind, run_build
from mipkit.pipeline.engines import ENGINES
from mipkit.pipeline.shard import (
    STATS_FILE,
    STATUS_FILE,
    done_shard_dirs,
    scratch_dir,
    shard_dir,
    summarize,
    worker_identity,
)
from mipkit.pipeline.status import build_dir

VIDEOS_FILE = "videos.arrow"
METADATA_FILE = "metadata.jsonl"
SPLIT_MODES = ("partition", "ratio")
# Transient answers are not knowledge: they stay out of metadata.jsonl and are retried later.
_NOT_RECORDED = records.TRANSIENT_STATUSES | {NO_METADATA, records.DOWNLOAD_ERROR}


@dataclass(frozen=True)
class ShardSettings:
    """Everything a shard worker needs (picklable: it travels to processes and Ray tasks)."""

    kind: str
    music_index: int
    cache_dir: str
    ytdlp: YtdlpConfig
    lookup_base: str
    lookup_rate: float  # per worker process
    lookup_retries: int
    lookup_timeout: float
    metadata_rate: float  # per worker process
    video_url_template: str
    metadata_file: str | None = None
    fetch: bool = True
    threads: int = 4


@dataclass
class Yt8mTask:
    index: int
    source: TfrecordSource


@dataclass
class Yt8mOptions:
    tfrecords: list[str]
    out: Path
    settings: ShardSettings
    recipe: dict = field(default_factory=dict)  # redacted, for build.json
    split_by: str = "partition"
    validate_as: str = "test"
    ratios: dict[str, float] = field(default_factory=lambda: {"train": 0.78, "validation": 0.0, "test": 0.22})
    seed: int = 0
    workers: int = 1
    engine: str = "local"
    ray_address: str | None = None  # --engine ray: the cluster to join (else RAY_ADDRESS, else local)
    shared_fs: bool = False  # a local --out that every Ray node mounts
    overwrite: bool = False
    retry_failed: bool = False


def run_yt8m_shard(
    task: Yt8mTask, settings: ShardSettings, out_dir: Path, on_event: Callable[[object], None] | None = None
) -> dict:
    """Build one shard and commit it; returns its stats. Safe to call again after a kill."""
    folder = shard_dir(out_dir, task.index)  # local or on a store; files are written on local scratch first
    if (folder / STATS_FILE).is_file():
        return json.loads((folder / STATS_FILE).read_text())
    folder.rmtree()
    folder.mkdir()
    began = time.time()
    emit = on_event or (lambda event: None)  # the driver's protocol: ("total", n), then {status: 1} per video
    cache = Path(settings.cache_dir)
    local = fetch_to_cache(task.source, cache / "tfrecords", timeout=settings.lookup_timeout * 4)

    music, bad, total = [], [], 0
    for record in read_records(local, settings.music_index):
        total += 1
        if record.error:
            bad.append(record)
        elif settings.music_index in record.labels:
            music.append(record)
    emit(("total", len(music) + len(bad)))

    known = load_metadata_file(Path(settings.metadata_file)) if settings.metadata_file else {}
    resolver = MetadataResolver(
        known,
        LookupClient(
            settings.lookup_base,
            DiskCache(cache / "lookup"),
            settings.lookup_rate,
            settings.lookup_retries,
            settings.lookup_timeout,
        ),
        YtdlpMetadata(settings.ytdlp, settings.video_url_template, settings.metadata_rate, DiskCache(cache / "ytdlp")),
        fetch=settings.fetch,
    )
    statuses = [
        SampleStatus(BAD_RECORD, f"{task.source.name} record {r.index}: {r.error}", pair_id=r.video_id, row=r.index)
        for r in bad
    ]
    for status in statuses:
        emit({status.status: 1})
    kept, learnt = [], []
    with ThreadPoolExecutor(max_workers=settings.threads, thread_name_prefix=f"yt8m{task.index}") as pool:
        for record, meta in zip(music, pool.map(lambda r: resolver.resolve(r.video_id), music)):
            status, error = meta.verdict(settings.kind)
            url = settings.video_url_template.format(youtube_id=meta.youtube_id) if meta.youtube_id else None
            statuses.append(
                SampleStatus(
                    status, error, pair_id=record.video_id, source_id=meta.youtube_id, url=url, row=record.index
                )
            )
            if meta.status not in _NOT_RECORDED:
                learnt.append(meta.to_json())
            if status == records.OK:
                kept.append((record, meta))
            emit({status: 1})

    table = shard_table([(r, m.id, m.youtube_id, m.title, m.tags) for r, m in kept], task.source)
    scratch = scratch_dir(f"yt8m{task.index}")
    try:
        tmp = scratch / VIDEOS_FILE
        with (
            pa.OSFile(str(tmp), "wb") as sink,
            pa.ipc.new_file(sink, table.schema, options=pa.ipc.IpcWriteOptions(compression="zstd")) as writer,
        ):
            writer.write_table(table, max_chunksize=64)
        (folder / VIDEOS_FILE).upload(tmp)
        write_metadata_jsonl(scratch / METADATA_FILE, learnt)
        (folder / METADATA_FILE).upload(scratch / METADATA_FILE)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    (folder / STATUS_FILE).write_text("".join(json.dumps(s.to_dict()) + "\n" for s in statuses))
    stats = {
        "shard": task.index,
        "source": task.source.name,
        "records": total,
        "music": len(music),
        "rows": len(kept),
        "skipped": {NOT_MUSIC: total - len(music) - len(bad)},
        **summarize(statuses),
        "seconds": round(time.time() - began, 3),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "built_on": worker_identity(),
    }
    (folder / STATS_FILE).write_json(stats)  # last: marks the shard done
    return stats


# --- assembly: committed shards -> DatasetDict ------------------------------------------------


def _committed(out: Location | Path, name: str) -> list[Location]:
    return [d / name for d in done_shard_dirs(out) if (d / name).is_file()]


def _batches(path: Location):
    source = pa.memory_map(path.url) if path.is_local else pa.BufferReader(path.read_bytes())
    reader = pa.ipc.open_file(source)
    return (reader.get_batch(i) for i in range(reader.num_record_batches))


def _split_assigner(files: list[Path], split_by: str, validate_as: str, ratios: dict[str, float], seed: int):
    if split_by == "partition":
        mapping = {"train": "train", "validate": validate_as, "test": "test"}
        return lambda table: [mapping[p] for p in table["partition"].to_pylist()]
    from mipkit.pipeline.plan import assign_splits

    ids = [v for path in files for batch in _batches(path) for v in batch.column("video_id").to_pylist()]
    plan = assign_splits(ids, ratios, seed)
    return lambda table: [plan[v] for v in table["video_id"].to_pylist()]


def assemble_yt8m(out: Path, split_by: str, validate_as: str, ratios: dict[str, float], seed: int) -> dict[str, int]:
    """Write ``OUT/{dataset_dict.json,<splits>}`` from the committed shards; returns rows per split."""
    import datasets
    import pyarrow.compute as pc
    from datasets import Dataset, DatasetInfo
    from datasets.table import table_cast

    datasets.disable_progress_bars()
    files = _committed(out, VIDEOS_FILE)
    # Local files (datasets memory-maps them); beside OUT when it is local, so the swap-in is a rename.
    where = as_location(out)
    work = (where / "build" / "assemble").local_path if where.is_local else scratch_dir("yt8m-assemble")
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    split_of = _split_assigner(files, split_by, validate_as, ratios, seed)
    features = dataset_features()
    columns, schema = list(features), features.arrow_schema
    writers: dict[str, pa.ipc.RecordBatchStreamWriter] = {}
    rows: Counter = Counter()
    seen: set[str] = set()
    for path in files:
        for batch in _batches(path):
            table = pa.Table.from_batches([batch])
            fresh = [v not in seen and not seen.add(v) for v in table["video_id"].to_pylist()]  # one row per video
            if not all(fresh):
                table = table.filter(pa.array(fresh, pa.bool_()))
            labels = split_of(table)
            table = table_cast(table.append_column("split", pa.array(labels, pa.string())).select(columns), schema)
            for split in SPLITS:
                # Filtering copies the frames: only when a batch really mixes splits (ratio mode).
                part = table if set(labels) == {split} else table.filter(pc.equal(table["split"], split))
                if part.num_rows:
                    if split not in writers:  # the stream format datasets memory-maps (Dataset.from_file)
                        writers[split] = pa.ipc.new_stream(str(work / f"{split}.arrow"), schema)
                    writers[split].write_table(part)
                    rows[split] += part.num_rows
    for writer in writers.values():
        writer.close()
    if split_by == "partition":
        wanted = {"train", validate_as} | ({"test"} if rows["test"] else set())
    else:
        wanted = {k for k, v in ratios.items() if v > 0}
    splits = {}
    for split in SPLITS:
        if rows[split]:
            splits[split] = Dataset.from_file(str(work / f"{split}.arrow"), info=DatasetInfo(features=features))
        elif split in wanted:
            splits[split] = Dataset.from_dict({c: [] for c in columns}, features=features)
    save_splits(out, splits, work)
    return {split: rows[split] for split in splits}


# --- the build -------------------------------------------------------------------------------


def _fingerprint(sources: list[TfrecordSource], settings: ShardSettings) -> str:
    """What decides shard contents; a resumed build must match it or its shards would mix."""
    digest = hashlib.sha256()
    if settings.metadata_file:
        digest.update(Path(settings.metadata_file).read_bytes())
    digest.update(
        json.dumps(
            {"kind": settings.kind, "music_index": settings.music_index, "inputs": [s.identity() for s in sources]},
            sort_keys=True,
        ).encode()
    )
    return digest.hexdigest()


def _check_options(opts: Yt8mOptions, sources: list[TfrecordSource]) -> None:
    if opts.settings.kind not in KINDS:
        raise MipkitError(f"subset {opts.settings.kind!r} is unknown; choose one of {', '.join(KINDS)}")
    if opts.engine not in ENGINES:
        raise MipkitError(f"--engine {opts.engine!r} is unknown; choose one of {', '.join(ENGINES)}")
    if opts.split_by not in SPLIT_MODES:
        raise MipkitError(f"--split-by {opts.split_by!r} is unknown; choose one of {', '.join(SPLIT_MODES)}")
    if opts.validate_as not in SPLITS:
        raise MipkitError(f"--validate-as {opts.validate_as!r} is unknown; choose one of {', '.join(SPLITS)}")
    if opts.split_by == "partition":
        unknown = [s.name for s in sources if partition_of(s.name) is None]
        if unknown:
            raise MipkitError(
                f"cannot tell the partition of {unknown[0]!r} from its name (train*/validate*/test*); rename it or pass --split-by ratio"
            )
    elif any(v < 0 for v in opts.ratios.values()) or abs(sum(opts.ratios.values()) - 1.0) > 1e-6:
        raise MipkitError(f"split ratios {opts.ratios} must be >= 0 and sum to 1")
    if any(partition_of(s.name) == "test" for s in sources):
        ui.console.print(
            "[yellow]note:[/yellow] YouTube-8M test* files carry no labels, so none of their videos is recognised as a music video"
        )


def build_yt8m(opts: Yt8mOptions) -> dict:
    """Run (or resume) a YouTube-8M subset build through the one build driver; returns its summary."""
    sources = resolve_inputs(opts.tfrecords)
    _check_options(opts, sources)
    requested = {k: v for k, v in asdict(opts.settings).items() if k != "ytdlp"}
    share = max(1, min(opts.workers, len(sources)))  # each worker process gets its share of the rate limits
    opts = replace(
        opts,
        settings=replace(
            opts.settings,
            lookup_rate=opts.settings.lookup_rate / share,
            metadata_rate=opts.settings.metadata_rate / share,
        ),
    )
    if opts.settings.metadata_file:
        load_metadata_file(Path(opts.settings.metadata_file))  # a bad file fails here, not in every shard

    def finish(out: Path, rows: dict[str, int]) -> dict:
        return {
            "subset": opts.settings.kind,
            "settings": requested,
            "metadata_rows": merge_metadata_files(_committed(out, METADATA_FILE), build_dir(out) / METADATA_FILE),
        }

    kind = Kind(
        name=f"yt8m-{opts.settings.kind}",
        tasks=[Yt8mTask(i, s) for i, s in enumerate(sources)],
        shard_fn=run_yt8m_shard,
        shard_args=(opts.settings, opts.out),
        fingerprint=_fingerprint(sources, opts.settings),
        assemble=lambda out: assemble_yt8m(out, opts.split_by, opts.validate_as, opts.ratios, opts.seed),
        assembly_inputs=lambda out: json.dumps(
            [opts.split_by, opts.validate_as, opts.ratios, opts.seed, requested], sort_keys=True, default=str
        ),
        record={
            "recipe": opts.recipe,
            "inputs": [s.name for s in sources],
            "music_label_index": opts.settings.music_index,
        },
        unit="videos",
        task_name="file",
        describe=lambda t: f"shard {t.index} ({t.source.name})",
        finish=finish,
        changed="other TFRecords, another subset or another --metadata",
        nothing_built=f"no video was kept from {len(sources)} TFRecord file(s)",
    )
    return run_build(
        opts.out,
        kind,
        workers=opts.workers,
        engine=opts.engine,
        overwrite=opts.overwrite,
        retry_failed=opts.retry_failed,
        ray_address=opts.ray_address,
        shared_fs=opts.shared_fs,
    )
