"""``mipkit browse DIR``: a static site of a built dataset, to look at and listen to what was built.

* ``index.html``: rows per split and emotion, samples per status, the label chart, the failures with
  their reasons (filterable by status), links to the galleries.
* ``{split}-NNN.html``: paged galleries of pairs (image, a player of the clip, emotion with its
  provenance, title, a link to the source at ``start_s``), filterable by emotion and label source.
  Audio-only builds (``audioset-mood``) show players only; YouTube-8M builds show tables of titles,
  keywords and sparklines of the frame features.

Media are written once under ``media/{split}/`` (unchanged files are not rewritten); every page
opens from ``file://``. Source URLs lose any ``user:password@``, and no local path reaches a page.
"""

from __future__ import annotations

import json
import shutil
from collections import Counter
from pathlib import Path

from mipkit.core import ui
from mipkit.core.errors import MipkitError
from mipkit.core.html import (
    audio_suffix,
    audio_tag,
    counts_table,
    esc,
    filter_bar,
    image_suffix,
    page,
    pager,
    safe_name,
    source_link,
    sparkline,
    write_assets,
    write_once,
)
from mipkit.core.ids import redact_url
from mipkit.core.records import SPLITS
from mipkit.pipeline.assemble import column_values
from mipkit.release.hydrate import private_strings, scrub

DEFAULT_PER_PAGE = 48
UNLABELLED = "unlabelled"


def load_dataset_dir(dataset_dir: Path):
    from datasets import load_from_disk

    if not (Path(dataset_dir) / "dataset_dict.json").is_file():
        raise MipkitError(
            f"{Path(dataset_dir).name!r} holds no dataset (no dataset_dict.json); "
            "pass the --out folder of a finished `mipkit build`"
        )
    return load_from_disk(str(dataset_dir))


def ordered_splits(dataset) -> list[str]:
    return [s for s in SPLITS if s in dataset] + [s for s in dataset if s not in SPLITS]


def emotion_names(split_ds) -> list[str]:
    feature = split_ds.features.get("emotion")
    return list(getattr(feature, "names", []) or [])


def emotion_of(value, names: list[str]) -> str:
    if value is None or (isinstance(value, int) and value < 0):
        return UNLABELLED
    if isinstance(value, int) and names:
        return names[value] if value < len(names) else str(value)
    return str(value)


def label_source_kind(source: str | None) -> str:
    """``passt:1a2b..`` -> ``passt``: the filterable part of a label's provenance."""
    return (source or "none").split(":", 1)[0]


def provenance(source: str | None, score) -> str:
    if not source:
        return ""
    return f"{source} ({float(score):.2f})" if score is not None else source


def undecoded(split_ds):
    """The split with its media columns as raw bytes (no decoding, no torchcodec)."""
    import datasets

    ds = split_ds
    if "image" in ds.column_names:
        ds = ds.cast_column("image", datasets.Image(decode=False))
    if "audio" in ds.column_names and isinstance(ds.features["audio"], datasets.Audio):
        ds = ds.cast_column("audio", datasets.Audio(decode=False))
    return ds


def media_bytes(entry) -> bytes | None:
    if not entry:
        return None
    if entry.get("bytes"):
        return entry["bytes"]
    path = entry.get("path")
    return Path(path).read_bytes() if path and Path(path).is_file() else None


def is_feature_build(split_ds) -> bool:
    return "rgb" in split_ds.column_names and "image" not in split_ds.column_names


# --------------------------------------------------------------------------------------------- pages


def pair_card(row: dict, names: list[str], site: Path, split: str) -> str:
    """One pair: its media written under ``media/{split}/``, the card's markup returned."""
    pair_id = str(row.get("pair_id") or row.get("video_id") or "")
    stem = safe_name(pair_id)
    parts = []
    image = media_bytes(row.get("image"))
    if image:
        path = write_once(site / "media" / split / f"{stem}{image_suffix(image)}", image)
        parts.append(f'<img src="media/{split}/{path.name}" alt="frame of {esc(pair_id)}">')
    audio = media_bytes(row.get("audio")) if isinstance(row.get("audio"), dict) else None
    if audio:
        path = write_once(site / "media" / split / f"{stem}{audio_suffix(audio)}", audio)
        parts.append(audio_tag(f"media/{split}/{path.name}"))
    emotion = emotion_of(row.get("emotion"), names)
    kind = label_source_kind(row.get("emotion_source")) if emotion != UNLABELLED else "none"
    where = provenance(row.get("emotion_source"), row.get("emotion_score")) if emotion != UNLABELLED else ""
    link = source_link(row.get("source_url"), row.get("start_s"))
    start = row.get("start_s")
    times = f"{float(start):.2f}–{float(row.get('end_s') or start + 10):.2f} s" if start is not None else ""
    meta = [
        f'<span class="tag">{esc(emotion)}</span> <span class="meta">{esc(where)}</span>',
        f"<div><b>{esc(row.get('title') or '')}</b></div>",
        f'<div class="meta">{esc(pair_id)} · {esc(times)}</div>',
    ]
    if link:
        meta.append(
            f'<div class="meta"><a href="{esc(link)}" target="_blank" rel="noopener">source at '
            f"{float(start or 0):.1f} s</a>{' · ' + esc(row['license']) if row.get('license') else ''}</div>"
        )
    return (
        f'<div class="card" data-item data-emotion="{esc(emotion)}" data-labelsource="{esc(kind)}">'
        + "".join(parts)
        + "".join(meta)
        + "</div>"
    )


def feature_row(row: dict) -> str:
    """A YouTube-8M video: title, keywords, link, and the per-second mean of its rgb and audio features."""
    import numpy as np

    sparks = []
    for column, colour in (("rgb", "#3366cc"), ("audio", "#cc6633")):
        frames = row.get(column)
        if frames is not None and len(frames):
            sparks.append(f"{column} {sparkline(np.asarray(frames, dtype=np.float32).mean(axis=1), colour=colour)}")
    youtube = row.get("youtube_id")
    link = (
        f'<a href="https://www.youtube.com/watch?v={esc(youtube)}" target="_blank" rel="noopener">{esc(youtube)}</a>'
        if youtube
        else ""
    )
    keywords = row.get("keywords") or []
    keywords = ", ".join(map(str, keywords)) if isinstance(keywords, list) else str(keywords)
    return (
        f"<tr data-item><td>{esc(row.get('video_id'))}</td><td>{link}</td><td>{esc(row.get('title'))}</td>"
        f"<td>{esc(keywords)}</td><td class='n'>{esc(row.get('num_seconds'))}</td><td>{'<br>'.join(sparks)}</td></tr>"
    )


def write_split_pages(
    site: Path, dataset_name: str, split: str, split_ds, per_page: int, nav: str, secrets: list[str]
) -> int:
    """The paged gallery of one split; returns the number of pages."""
    ds = undecoded(split_ds) if len(split_ds) else split_ds
    names = emotion_names(split_ds)
    features = is_feature_build(split_ds)
    emotions = (
        sorted({emotion_of(v, names) for v in column_values(ds, "emotion")}) if "emotion" in ds.column_names else []
    )
    sources = (
        sorted({label_source_kind(v) for v in column_values(ds, "emotion_source")})
        if "emotion_source" in ds.column_names
        else []
    )
    pages = max(1, -(-len(ds) // per_page))
    for number in range(1, pages + 1):
        rows = ds.select(range((number - 1) * per_page, min(number * per_page, len(ds)))) if len(ds) else []
        if features:
            body = (
                "<table><tr><th>video_id</th><th>YouTube</th><th>title</th><th>keywords</th><th>seconds</th>"
                "<th>features (mean per second)</th></tr>" + "".join(feature_row(r) for r in rows) + "</table>"
            )
            bar = filter_bar({})
        else:
            body = '<div class="cards">' + "".join(pair_card(r, names, site, split) for r in rows) + "</div>"
            filters = {"emotion": emotions} if emotions else {}
            if len(sources) > 1:
                filters["labelsource"] = sources
            bar = filter_bar(filters, {"labelsource": "label source"})
        links = pager(split, number, pages)
        title = f"{dataset_name} · {split} · page {number} of {pages} ({len(ds)} rows)"
        text = scrub(page(title, bar + links + body + links, nav), secrets)
        (site / f"{split}-{number:03d}.html").write_text(text, encoding="utf-8")
    return pages


def split_counts_table(dataset) -> str:
    splits = ordered_splits(dataset)
    first = dataset[splits[0]]
    names = emotion_names(first)
    labels = names + [UNLABELLED] if names else []
    head = "<tr><th>split</th><th>rows</th>" + ("<th>sources</th>" if "source_id" in first.column_names else "")
    head += "".join(f"<th>{esc(n)}</th>" for n in labels) + "</tr>"
    body = []
    for split in splits:
        ds = dataset[split]
        cells = [f"<td><a href='{split}-001.html'>{esc(split)}</a></td>", f"<td class='n'>{len(ds)}</td>"]
        if "source_id" in ds.column_names:
            cells.append(f"<td class='n'>{len(set(column_values(ds, 'source_id')))}</td>")
        if labels:
            counts = Counter(emotion_of(v, names) for v in column_values(ds, "emotion"))
            cells += [f"<td class='n'>{counts.get(n, 0)}</td>" for n in labels]
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><caption>rows per split and emotion</caption>{head}{''.join(body)}</table>"


def failures_section(report: dict) -> str:
    failed = report.get("failed", [])
    if not failed:
        return "<h2>Failures</h2><p>none: every requested sample was built</p>"
    statuses = sorted({f["status"] for f in failed})
    rows = "".join(
        f"<tr data-item data-status='{esc(f['status'])}'><td>{esc(f.get('pair_id') or redact_url(f.get('url')) or '?')}"
        f"</td><td>{esc(f['status'])}</td><td>{esc(f.get('error', ''))}</td></tr>"
        for f in failed
    )
    return (
        f"<h2>Failures ({len(failed)})</h2>"
        + filter_bar({"status": statuses})
        + f"<table id='failures'><tr><th>sample</th><th>status</th><th>reason</th></tr>{rows}</table>"
    )


def build_site(dataset_dir: Path, out: Path | None = None, per_page: int = DEFAULT_PER_PAGE) -> Path:
    """Write the site of ``dataset_dir`` to ``out`` (default ``DIR/site``); returns the path of ``index.html``."""

    if per_page < 1:
        raise MipkitError(f"--per-page {per_page}: must be at least 1 (pairs per gallery page)")
    dataset_dir = Path(dataset_dir)
    dataset = load_dataset_dir(dataset_dir)
    site = Path(out) if out else dataset_dir / "site"
    write_assets(site)
    name = dataset_dir.resolve().name
    splits = ordered_splits(dataset)
    nav = (
        "<nav><a href='index.html'>overview</a>"
        + "".join(f"<a href='{s}-001.html'>{esc(s)}</a>" for s in splits)
        + "</nav>"
    )
    report = {}
    build_json = dataset_dir / "build" / "build.json"
    if build_json.is_file():
        from mipkit.pipeline.status import status_report

        report = status_report(dataset_dir)
    secrets = private_strings(dataset_dir, json.loads(build_json.read_text()) if build_json.is_file() else {})
    with ui.progress_bar("pages") as progress:
        task = progress.add_task("writing the galleries", total=len(splits), failed=0)
        for split in splits:
            write_split_pages(site, name, split, dataset[split], per_page, nav, secrets)
            progress.advance(task)
    sections = ["<h2>Splits</h2>", split_counts_table(dataset)]
    if report.get("counts"):
        sections += ["<h2>Samples by status</h2>", counts_table("every requested sample", report["counts"])]
    chart = dataset_dir / "label_distribution.png"
    if chart.is_file():
        shutil.copyfile(chart, site / "label_distribution.png")
        sections += [
            "<h2>Labels</h2>",
            "<img src='label_distribution.png' alt='pairs per emotion and split' style='max-width:100%'>",
        ]
    if report:
        sections.append(failures_section(report))
    index = page(f"{name}: dataset browser", "".join(sections), nav)
    (site / "index.html").write_text(scrub(index, secrets), encoding="utf-8")
    return site / "index.html"


def print_site_summary(dataset_dir: Path, index: Path) -> None:
    dataset = load_dataset_dir(dataset_dir)
    ui.stdout.print(
        ui.counts_table("rows per split", {s: len(dataset[s]) for s in ordered_splits(dataset)}, "rows", key="split")
    )
    ui.stdout.print(f"browser: {index}  (open it in a web browser; no server needed)")
