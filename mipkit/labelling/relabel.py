"""``mipkit label``: relabel a saved dataset (a local folder or an object-store URL) with a mood labeller.

Every pair whose label did not come with the data gets the model's label. The new dataset never
replaces the old one half-written: a local folder is written beside and swapped in whole
(``swap_in_folder``); on a store, where nothing renames a folder, the new dataset is first uploaded
whole beside (``.NAME.labelling``), then copied over the old splits with ``dataset_dict.json`` last,
and a run killed during that copy is finished by the next one. For a mipkit build folder the labels
are also recorded in ``build/model_labels.parquet``, so re-assembling the build keeps them.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections import Counter
from pathlib import Path

from mipkit.core import ui
from mipkit.core.errors import MipkitError
from mipkit.core.files import save_dataset_dict, swap_in_folder
from mipkit.core.ownership import (
    MARKER,
    check_plain_dataset,
    claim,
    exclusive,
    read_marker,
    staging_folder,
    write_marker,
)
from mipkit.core.paths import BUILD_DIR
from mipkit.core.storage import Location, as_location, copy_tree, load_dataset_dict, upload_tree
from mipkit.labelling.passt import PasstMoodLabeller
from mipkit.labelling.tasks import label_file, plan_tasks, remember
from mipkit.pipeline.assemble import column_values, write_model_labels
from mipkit.pipeline.shard import scratch_dir

# Labels that came with the data (a manifest, AudioSet's own annotations) always win over a model.
PROTECTED_SOURCES = frozenset({"manifest", "audioset"})
LABEL_COLUMNS = ("emotion", "emotion_source", "emotion_score")
LABELLING_FILE = "labelling.json"
CHART_FILE = "label_distribution.png"


def label_dataset(
    dataset_dir: str | Path | Location,
    labeller: PasstMoodLabeller,
    threshold: float = 0.5,
    drop: bool = False,
    out: str | Path | Location | None = None,
    *,
    engine: str = "local",
    workers: int = 1,
    ray_address: str | None = None,
    shared_fs: bool = False,
    num_gpus_per_task: float = 0,
) -> dict:
    """Label every pair of ``dataset_dir`` whose label did not come with the data; returns the summary
    (also written to ``labelling.json``). Writes ``out`` (new or empty) or replaces ``dataset_dir``.

    Holds the lock of the folder it writes, so no build or other labelling run writes it meanwhile."""
    source = as_location(dataset_dir)
    target = as_location(out) if out is not None else source
    if not 0.0 <= threshold <= 1.0:
        raise MipkitError(f"--threshold {threshold} must be between 0 and 1")
    if num_gpus_per_task and engine != "ray":
        raise MipkitError("--num-gpus-per-task asks Ray for GPUs; add --engine ray (locally --device picks the GPU)")
    run = {"engine": engine, "workers": workers, "ray_address": ray_address, "shared_fs": shared_fs}
    with exclusive(target, "--out" if out is not None else "DATASET_DIR"):
        return _label(source, target, labeller, threshold, drop, run, num_gpus_per_task)


def _same(a: Location, b: Location) -> bool:
    if a.is_local and b.is_local:
        return os.path.realpath(a.url) == os.path.realpath(b.url)
    return a.url == b.url


def _label(
    source: Location,
    target: Location,
    labeller: PasstMoodLabeller,
    threshold: float,
    drop: bool,
    run: dict,
    num_gpus: float,
) -> dict:
    import datasets
    from datasets import ClassLabel, DatasetDict

    in_place = _same(source, target)
    if in_place and not source.is_local:
        _finish_interrupted_swap(source)
    if not (source / "dataset_dict.json").is_file():
        raise MipkitError(
            f"{source.display!r} is not a saved dataset (no dataset_dict.json); pass the --out folder of a mipkit build"
        )
    # In place, the split folders are rewritten and the rest is carried over: a split holding a file
    # that neither datasets nor mipkit wrote is refused. --out must be new or empty.
    owner = read_marker(source) if in_place else claim(target, "--out", create=False)
    if not in_place and target.exists() and target.iterdir():  # even a labelled copy of ours is not overwritten
        raise MipkitError(
            f"--out {target.display!r} exists and is not empty; pass a new folder, or leave --out away to relabel in place"
        )
    datasets.disable_progress_bars()
    dataset = load_dataset_dict(source)
    if in_place:
        check_plain_dataset(source, dataset.keys(), "DATASET_DIR")
    first = next(iter(dataset.values()))
    missing = [c for c in ("audio", *LABEL_COLUMNS) if c not in first.column_names]
    if missing or not isinstance(first.features["emotion"], ClassLabel):
        raise MipkitError(
            f"{source.display!r} lacks {', '.join(missing) or 'a ClassLabel emotion column'}; pass a dataset built by mipkit build"
        )
    names = first.features["emotion"].names
    absent = [n for n in labeller.class_names if n not in names]
    if absent:
        raise MipkitError(
            f"{source.display!r} labels are {', '.join(names)}; the labeller predicts {', '.join(absent)} too; build it with the audioset_moods taxonomy"
        )
    class_index = [names.index(n) for n in labeller.class_names]
    todo = {
        split: [i for i, s in enumerate(column_values(ds, "emotion_source")) if s not in PROTECTED_SOURCES]
        for split, ds in dataset.items()
    }
    tasks, found = _probabilities(dataset, todo, source, labeller, run, num_gpus)

    relabelled, counts, emotions, overlay_rows = {}, Counter(), {}, []
    for split, ds in dataset.items():
        columns = {c: column_values(ds, c) for c in LABEL_COLUMNS}
        counts["protected"] += len(ds) - len(todo[split])
        for task in (t for t in tasks if t.split == split):
            for row, probs in zip(task.rows, found[task.index]["probs"]):
                i = task.offset + row
                columns["emotion_source"][i] = labeller.provenance
                if probs is None:  # did not decode: unlabelled
                    columns["emotion"][i], columns["emotion_score"][i] = None, None
                    counts["undecodable"] += 1
                    continue
                best = max(range(len(probs)), key=probs.__getitem__)
                confident = probs[best] >= threshold
                columns["emotion"][i] = class_index[best] if confident else None
                columns["emotion_score"][i] = probs[best]  # kept when below threshold: a later cut can reuse it
                counts["labelled" if confident else "unlabelled"] += 1
        for pair_id, emotion, score, origin in zip(
            column_values(ds, "pair_id"), columns["emotion"], columns["emotion_score"], columns["emotion_source"]
        ):
            if origin == labeller.provenance:
                overlay_rows.append(
                    {
                        "pair_id": pair_id,
                        "emotion": None if emotion is None else names[emotion],
                        "emotion_score": score,
                        "emotion_source": origin,
                        "dropped": drop and emotion is None,
                    }
                )
        relabelled[split] = _replace_columns(ds, columns, drop)
        emotions[split] = [e for e in columns["emotion"] if e is not None or not drop]
    if drop:
        counts["dropped"] = counts["unlabelled"] + counts["undecodable"]
    summary = {
        "emotion_source": labeller.provenance,
        "threshold": threshold,
        "drop": drop,
        "model": labeller.details,
        "counts": dict(counts),
        "distribution": distribution_of(emotions, names),
        "dataset": target.name,
        "labelled_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    is_build = in_place and (source / BUILD_DIR).is_dir()
    write = _write_local if target.is_local else _write_store
    write(DatasetDict(relabelled), summary, source, target, owner, in_place, overlay_rows if is_build else None)
    summary["chart"] = str(target / CHART_FILE)
    return summary


def _probabilities(dataset, todo: dict, source: Location, labeller: PasstMoodLabeller, run: dict, num_gpus: float):
    """Run the labelling tasks on the chosen engine; ``(tasks, results by task index)``."""
    from mipkit.pipeline.driver import check_cluster_can_reach
    from mipkit.pipeline.engines import check_ray_gpus, engine_session, run_shards

    engine, workers = run["engine"], run["workers"]
    with engine_session(engine, workers, run["ray_address"]) as nodes:
        ray = engine == "ray"
        if ray:  # before any work: a task asking for absent GPUs would wait forever
            check_cluster_can_reach(
                source, nodes, run["shared_fs"], "DATASET_DIR", "whose tasks would read the clips from their own disks"
            )
            check_ray_gpus(num_gpus)
        tasks = plan_tasks(dataset, todo, source, remote=ray)
        weights_file = labeller.spec.get("weights")
        weights = Path(weights_file).read_bytes() if ray and weights_file else None  # shipped: nodes need no copy
        if not ray and workers <= 1:
            remember(labeller)  # in this process: the model already loaded
        found: dict[int, dict] = {}
        with ui.progress_bar("clips") as progress:
            bar = progress.add_task(
                f"labelling with {labeller.provenance}", total=sum(len(t.rows) for t in tasks), failed=0
            )

            def on_done(task, result: dict, streamed: bool) -> None:
                if result["provenance"] != labeller.provenance:
                    raise MipkitError(f"a worker labelled with {result['provenance']}, not {labeller.provenance}")
                found[task.index] = result
                if not streamed:
                    progress.update(bar, advance=len(task.rows))

            errors = run_shards(
                tasks,
                label_file,
                (labeller.spec, weights),
                workers=workers,
                engine=engine,
                on_event=lambda n: progress.update(bar, advance=n),
                on_done=on_done,
                describe=lambda task: f"{task.split}/{task.file.name}",
                num_gpus=num_gpus,
            )
    if errors:
        raise MipkitError(f"labelling failed ({errors[0]}); nothing was written, run the same command again")
    return tasks, found


def _replace_columns(ds, columns: dict, drop: bool):
    order, features = ds.column_names, ds.features
    new = ds.remove_columns(list(LABEL_COLUMNS))
    for name in LABEL_COLUMNS:
        new = new.add_column(name, columns[name], feature=features[name])
    new = new.select_columns(order)
    if drop:
        keep = [i for i, e in enumerate(columns["emotion"]) if e is not None]
        if len(keep) < len(new):
            new = new.select(keep)
    return new


def distribution_of(emotions_by_split: dict[str, list], names: list[str]) -> dict[str, dict[str, int]]:
    return {
        split: dict(Counter(names[e] if e is not None and e >= 0 else "unlabelled" for e in labels))
        for split, labels in emotions_by_split.items()
    }


# ---------------------------------------------------------------------------- writing the result
def _write_dataset(dataset_dict, path: Path) -> None:
    """Write the relabelled dataset (a separate function so tests can make it fail mid-way)."""
    save_dataset_dict(dataset_dict, path)


def _fill(staged: Path, dataset_dict, summary: dict, owner: str | None) -> None:
    """The new dataset, its ``labelling.json`` and chart, in a local folder."""
    _write_dataset(dataset_dict, staged)
    if owner is not None:  # the new splits belong to the same output: a later build may replace them
        for split in dataset_dict:
            write_marker(staged / split, owner)
    (staged / LABELLING_FILE).write_text(json.dumps(summary, indent=2))
    ui.bar_chart(
        staged / CHART_FILE,
        f"pairs per emotion and split ({summary['emotion_source']})",
        summary["distribution"],
        xlabel="emotion",
        ylabel="pairs",
    )


def _write_local(dataset_dict, summary, source: Location, target: Location, owner, in_place, model_rows) -> None:
    path = target.local_path
    staged = staging_folder(path, "labelling", owner or "unowned")
    try:
        _fill(staged, dataset_dict, summary, owner)
        if owner is None:  # a dataset saved by someone else, relabelled in place: no claim on it
            (staged / MARKER).unlink()
        if in_place:
            _link_extras(path, staged, {"dataset_dict.json", *dataset_dict.keys(), LABELLING_FILE, CHART_FILE})
            if model_rows is not None:  # a build folder: re-assembling it (resume, re-run) keeps these labels
                write_model_labels(staged / BUILD_DIR, model_rows)
            swap_in_folder(staged, path)
        else:
            if path.exists():
                path.rmdir()  # checked empty before
            os.replace(staged, path)
    finally:
        shutil.rmtree(staged, ignore_errors=True)  # the half-written new folder, or the old one after the swap


def _store_staging(target: Location) -> Location:
    return target.with_name(f".{target.name}.labelling")


def _write_store(dataset_dict, summary, source: Location, target: Location, owner, in_place, model_rows) -> None:
    scratch = scratch_dir("labelling")
    try:
        local = scratch / "dataset"
        local.mkdir()
        _fill(local, dataset_dict, summary, owner)
        if not in_place:  # a new --out: it belongs to this output id; loadable once dataset_dict.json is there
            write_marker(local, owner)
            upload_tree(local, target, last=("dataset_dict.json",))
            return
        staged = _store_staging(target)
        staged.rmtree()  # what a run killed before its swap left
        upload_tree(local, staged, last=("dataset_dict.json",))  # whole beside, before the old one changes
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    if model_rows is not None:  # a build folder: re-assembling it keeps these labels
        write_model_labels(target / BUILD_DIR, model_rows)
    _swap_on_store(staged, target)


def _swap_on_store(staged: Location, target: Location) -> None:
    """Copy the complete new dataset in ``staged`` over the old splits; ``dataset_dict.json`` goes first and
    comes back last, so no half is ever loadable, and ``staged`` stays until the copy is done."""
    splits = set(json.loads((staged / "dataset_dict.json").read_text())["splits"])
    if (target / "dataset_dict.json").is_file():
        splits |= set(json.loads((target / "dataset_dict.json").read_text()).get("splits", []))
    (target / "dataset_dict.json").unlink()
    for split in sorted(splits):
        (target / split).rmtree()
        if (staged / split).is_dir():
            copy_tree(staged / split, target / split)
    for name in (LABELLING_FILE, CHART_FILE, "dataset_dict.json"):
        staged.fs.copy((staged / name).path, (target / name).path)
    target.invalidate()
    staged.rmtree()


def _finish_interrupted_swap(target: Location) -> None:
    """A run killed while copying its new dataset over the old one left it complete beside: finish the copy."""
    staged = _store_staging(target)
    if (staged / "dataset_dict.json").is_file() and not (target / "dataset_dict.json").is_file():
        ui.console.print(f"finishing the relabelling of {target.display} that a killed run left half copied")
        _swap_on_store(staged, target)


def _link_extras(source: Path, staged: Path, dataset_entries: set[str]) -> None:
    """Carry the build's other files (build/, card, charts) into the new folder by hard links."""
    for entry in source.iterdir():
        if entry.name in dataset_entries or (staged / entry.name).exists():
            continue
        if entry.is_dir():
            shutil.copytree(entry, staged / entry.name, copy_function=_link_or_copy, symlinks=True)
        else:
            _link_or_copy(entry, staged / entry.name)


def _link_or_copy(src, dst) -> None:
    try:
        os.link(src, dst)
    except OSError:  # file systems without hard links
        shutil.copy2(src, dst)
