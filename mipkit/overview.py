"""``mipkit inspect``: what a built dataset holds, without decoding media."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from rich.table import Table

from mipkit import ui
from mipkit.assemble import column_values
from mipkit.errors import MipkitError


def inspect_dataset(out: Path, rows: int = 5) -> None:
    from datasets import load_from_disk

    if not (Path(out) / "dataset_dict.json").is_file():
        raise MipkitError(f"{Path(out).name!r} holds no dataset (no dataset_dict.json); pass the --out folder of a finished build")
    dataset = load_from_disk(str(out))
    first = next(iter(dataset.values()))
    names = first.features["emotion"].names if "emotion" in first.features else []
    overview = Table(title=f"{Path(out).name}: splits")
    overview.add_column("split")
    overview.add_column("pairs", justify="right")
    overview.add_column("sources", justify="right")
    for name in names + ["unlabelled"]:
        overview.add_column(name, justify="right")
    for split, ds in dataset.items():
        labels = Counter(names[i] if i is not None and i >= 0 else "unlabelled" for i in column_values(ds, "emotion"))
        sources = len(set(column_values(ds, "source_id")))
        overview.add_row(split, str(len(ds)), str(sources), *[str(labels.get(n, 0)) for n in names + ["unlabelled"]])
    ui.stdout.print(overview)
    ui.stdout.print(f"columns: {', '.join(f'{k} ({type(v).__name__})' for k, v in first.features.items())}")
    for split, ds in dataset.items():
        if not len(ds):
            continue
        sample = Table(title=f"{split}: first {min(rows, len(ds))} rows")
        for column in ("pair_id", "start_s", "end_s", "emotion", "title"):
            sample.add_column(column, overflow="fold")
        # Read plain columns only: image and audio bytes are not decoded.
        plain = ds.select_columns(["pair_id", "start_s", "end_s", "emotion", "title"]).select(range(min(rows, len(ds))))
        for record in plain:
            label = names[record["emotion"]] if record["emotion"] is not None and record["emotion"] >= 0 else "unlabelled"
            sample.add_row(record["pair_id"], f"{record['start_s']:.3f}", f"{record['end_s']:.3f}", label, record["title"] or "")
        ui.stdout.print(sample)
