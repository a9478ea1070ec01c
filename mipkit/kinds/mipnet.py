"""Stage 1, read sources: a manifest (CSV, JSONL or Parquet) becomes per-source requests.

Columns: ``url`` (required: a YouTube id or any URL yt-dlp accepts), ``start_s`` (optional float),
``emotion`` (optional, a class of the recipe's taxonomy), ``title``, ``license`` (optional).
A bad row never stops the build: it is returned as a ``bad_row`` status with its reason.
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mipkit.config.taxonomy import Taxonomy
from mipkit.core.errors import MipkitError
from mipkit.core.ids import canonical_url, parse_time_s, source_id_for
from mipkit.core.records import BAD_ROW, DUPLICATE, SampleStatus, SourceRequest, Window

KNOWN_COLUMNS = ("url", "start_s", "emotion", "title", "license")


def _repeated(names) -> str | None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            return name
        seen.add(name)
    return None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """``json.loads`` hook: a key given twice is an error, not silently the last value."""
    repeated = _repeated(key for key, _ in pairs)
    if repeated is not None:
        raise ValueError(f"key {repeated!r} appears twice in one object")
    return dict(pairs)


def _iter_rows(path: Path) -> Iterator[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        with path.open(newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle, delimiter="\t" if suffix == ".tsv" else ",", skipinitialspace=True)
            if not reader.fieldnames or "url" not in [f.strip() for f in reader.fieldnames]:
                raise MipkitError(
                    f"manifest {path.name} has no 'url' column; columns must include: url (and optionally {', '.join(KNOWN_COLUMNS[1:])})"
                )
            repeated = _repeated((f or "").strip() for f in reader.fieldnames)
            if repeated is not None:
                raise MipkitError(
                    f"manifest {path.name}: column {repeated!r} appears twice in the header; keep one of them"
                )
            for row in reader:
                if None in row:  # DictReader puts cells beyond the header under the key None
                    yield {
                        "__error__": f"has {len(row[None])} more cell(s) than the header (quote values that contain commas)"
                    }
                    continue
                yield {(k or "").strip(): v for k, v in row.items()}
    elif suffix in (".jsonl", ".ndjson"):
        with path.open(encoding="utf-8") as handle:
            for number, line in enumerate(handle, 1):
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line, object_pairs_hook=_unique_keys)
                except json.JSONDecodeError as exc:
                    yield {"__error__": f"line {number} is not valid JSON ({exc.msg})"}
                    continue
                except ValueError as exc:
                    yield {"__error__": f"line {number}: {exc}"}
                    continue
                yield obj if isinstance(obj, dict) else {"__error__": f"line {number} is not a JSON object"}
    elif suffix == ".parquet":
        import pyarrow.parquet as pq

        names = pq.read_schema(path).names
        repeated = _repeated(names)
        if repeated is not None:
            raise MipkitError(f"manifest {path.name}: column {repeated!r} appears twice; keep one of them")
        if "url" not in names:
            raise MipkitError(f"manifest {path.name} has no 'url' column; columns must include: url")
        table = pq.read_table(path)
        for batch in table.to_batches():
            yield from batch.to_pylist()
    else:
        raise MipkitError(f"manifest {path.name}: unknown format {suffix!r}; use .csv, .tsv, .jsonl or .parquet")


def is_blank(value: Any) -> bool:
    """An empty cell: None, whitespace, or NaN (what Parquet and pandas write for a missing float)."""
    return (
        value is None
        or (isinstance(value, str) and not value.strip())
        or (isinstance(value, float) and math.isnan(value))
    )


def parse_start(value: Any) -> float:
    """A window start in seconds, or ``ValueError`` with the reason (shared by manifests and releases)."""
    return parse_time_s(value, "start_s")


def optional_text(row: dict[str, Any], key: str) -> str | None:
    return None if is_blank(row.get(key)) else str(row[key]).strip()


def _parse_row(raw: dict[str, Any], taxonomy: Taxonomy) -> tuple[str, Window] | str:
    """A (url, window) for a good row, or the reason the row is bad."""
    if "__error__" in raw:
        return raw["__error__"]
    url = raw.get("url")
    if is_blank(url):
        return "empty url"
    try:
        url = canonical_url(str(url))
    except ValueError as exc:
        return str(exc)
    start_s = None
    if not is_blank(raw.get("start_s")):
        try:
            start_s = parse_start(raw["start_s"])
        except ValueError as exc:
            return str(exc)
    emotion = None
    if not is_blank(raw.get("emotion")):
        try:
            emotion = taxonomy.normalize(str(raw["emotion"]))
        except ValueError as exc:
            return str(exc)
    return url, Window(
        row=0,
        start_s=start_s,
        emotion=emotion,
        title=optional_text(raw, "title"),
        license=optional_text(raw, "license"),
    )


def read_manifest(path: str | Path, taxonomy: Taxonomy) -> tuple[list[SourceRequest], list[SampleStatus]]:
    """Group a manifest's rows by source, in first-seen order, and collect bad/duplicate rows."""
    path = Path(path)
    if not path.is_file():
        raise MipkitError(f"manifest {path.name!r} does not exist; pass --manifest with a CSV, JSONL or Parquet file")
    sources: dict[str, SourceRequest] = {}
    seen_windows: set[tuple[str, float | None]] = set()
    problems: list[SampleStatus] = []
    try:
        rows = list(_iter_rows(path))
    except UnicodeDecodeError:
        raise MipkitError(
            f"manifest {path.name} is not UTF-8 text; re-save it as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None
    except (OSError, ValueError) as exc:  # pyarrow's ArrowInvalid is a ValueError
        raise MipkitError(
            f"manifest {path.name} cannot be read as {path.suffix.lstrip('.')}: {str(exc).splitlines()[0][:160]}"
        ) from None
    for number, raw in enumerate(rows, 1):
        parsed = _parse_row(raw, taxonomy)
        if isinstance(parsed, str):
            url = raw.get("url") if isinstance(raw.get("url"), str) else None
            problems.append(SampleStatus(status=BAD_ROW, error=f"row {number}: {parsed}", url=url, row=number))
            continue
        url, window = parsed
        window.row = number
        source_id = source_id_for(url)
        key = (source_id, None if window.start_s is None else round(window.start_s, 3))
        if key in seen_windows:
            error = f"row {number}: same source and start_s as an earlier row"
            problems.append(SampleStatus.of_window(DUPLICATE, error, source_id, url, window.start_s, number))
            continue
        seen_windows.add(key)
        request = sources.setdefault(source_id, SourceRequest(source_id=source_id, url=url))
        if str(raw["url"]) not in request.spellings:
            request.spellings.append(str(raw["url"]))  # two or more: a merge, recorded in build/merged_sources.jsonl
        request.windows.append(window)
    if not sources and not problems:
        raise MipkitError(f"manifest {path.name} has no rows; add one row per source (column 'url')")
    return list(sources.values()), problems
