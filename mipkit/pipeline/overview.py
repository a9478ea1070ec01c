"""``mipkit inspect``: what a built dataset holds, without decoding media."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from rich.table import Table

from mipkit.core import ui
from mipkit.core.errors import MipkitError
from mipkit.pipeline.assemble import column_values

# Plain columns worth showing in the sample rows, in this order, when the dataset has them.
_SAMPLE_COLUMNS = (
    "pair_id",
    "video_id",
    "youtube_id",
    "start_s",
    "end_s",
    "num_seconds",
    "emotion",
    "title",
    "keywords",
)


def inspect_dataset(out: Path, rows: int = 5) -> None:
    from datasets import load_from_disk

    if not (Path(out) / "dataset_dict.json").is_file():
        raise MipkitError(
            f"{Path(out).name!r} holds no dataset (no dataset_dict.json); pass the --out folder of a finished build"
        )
    dataset = load_from_disk(str(out))
    first = next(iter(dataset.values()))
    features = first.features
    names = features["emotion"].names if "emotion" in features else []
    labels = names + ["unlabelled"] if names else []
    group = "source_id" if "source_id" in features else None

    overview = Table(title=f"{Path(out).name}: splits")
    for column in ["split", "rows"] + (["sources"] if group else []) + labels:
        overview.add_column(column, justify="left" if column == "split" else "right")
    for split, ds in dataset.items():
        cells = [split, str(len(ds))]
        if group:
            cells.append(str(len(set(column_values(ds, group)))))
        if names:
            counts = Counter(
                names[i] if i is not None and i >= 0 else "unlabelled" for i in column_values(ds, "emotion")
            )
            cells += [str(counts.get(n, 0)) for n in labels]
        overview.add_row(*cells)
    ui.stdout.print(overview)
    ui.stdout.print(f"columns: {', '.join(f'{k} ({type(v).__name__})' for k, v in features.items())}")

    shown = [c for c in _SAMPLE_COLUMNS if c in features]
    for split, ds in dataset.items():
        if not len(ds):
            continue
        sample = Table(title=f"{split}: first {min(rows, len(ds))} rows")
        for column in shown:
            sample.add_column(column, overflow="fold")
        # Plain columns only: image, audio and feature sequences are not read.
        for record in ds.select_columns(shown).select(range(min(rows, len(ds)))):
            sample.add_row(*[_cell(column, record[column], names) for column in shown])
        ui.stdout.print(sample)


def _cell(column: str, value, names: list[str]) -> str:
    if column == "emotion":
        return names[value] if value is not None and value >= 0 else "unlabelled"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, list):
        return ", ".join(map(str, value[:8])) + (" …" if len(value) > 8 else "")
    return "" if value is None else str(value)
