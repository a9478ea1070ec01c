"""AudioSet inputs: segment CSVs and ``class_labels_indices.csv``, read into build requests.

Segment CSVs (``balanced_train_segments.csv``, ``eval_segments.csv``, ``unbalanced_train_segments.csv``)
have ``#`` comment lines, then rows ``YTID, start_seconds, end_seconds, "mid,mid,..."``. A segment is
kept when it carries exactly one of the taxonomy's moods (EMO-CLIM's selection), or its first mood
with ``keep_multi_mood``. Malformed rows and unknown mids become ``bad_row`` statuses; segments
without a mood are not requested at all and are only counted.
"""

from __future__ import annotations

import csv
import hashlib
import os
import re
import shutil
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from mipkit.config.taxonomy import Taxonomy
from mipkit.core.errors import MipkitError
from mipkit.core.ids import pair_id_for, parse_time_s, sanitize_id  # sanitize_id: cache file names only
from mipkit.core.paths import recipe_dir
from mipkit.core.records import BAD_ROW, DUPLICATE, SampleStatus, SourceRequest, Window

DEFAULT_URL_TEMPLATE = "https://www.youtube.com/watch?v={id}"
SELECTION_FILE = "audioset_segments.csv"  # the kept segments, written into --out (metadata-only list)
_YTID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_MID = re.compile(r"^/[mgt]/[A-Za-z0-9_]+$")


def default_labels_file() -> Path:
    """The seven mood rows of AudioSet's class_labels_indices.csv, shipped with the recipes."""
    return recipe_dir() / "audioset_mood_labels.csv"


def cache_dir() -> Path:
    """Where downloaded CSVs are kept (``MIPKIT_CACHE`` overrides ``~/.cache/mipkit``)."""
    return Path(os.environ.get("MIPKIT_CACHE", Path.home() / ".cache" / "mipkit")) / "audioset"


def fetch_csv(spec: str, cache: Path | None = None, timeout: float = 60.0) -> Path:
    """A local path as given; an http(s) URL downloaded once into the cache (atomic), then reused."""
    if not spec.lower().startswith(("http://", "https://")):
        path = Path(spec)
        if not path.is_file():
            raise MipkitError(
                f"--segments file {spec!r} does not exist; pass an AudioSet segment CSV or its http(s) URL"
            )
        return path
    cache = cache or cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    name = sanitize_id(spec.rstrip("/").rsplit("/", 1)[-1].removesuffix(".csv"), 40)
    target = cache / f"{name}-{hashlib.sha1(spec.encode()).hexdigest()[:10]}.csv"
    if target.is_file():
        return target
    tmp = target.with_name(target.name + f".{os.getpid()}.tmp")
    try:
        with urllib.request.urlopen(spec, timeout=timeout) as response, tmp.open("wb") as handle:
            shutil.copyfileobj(response, handle)
        os.replace(tmp, target)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        tmp.unlink(missing_ok=True)
        reason = getattr(exc, "reason", None) or exc
        raise MipkitError(
            f"could not download --segments {spec} ({reason}); download it yourself and pass the local file"
        ) from None
    return target


@dataclass(frozen=True)
class ClassLabel:
    index: int
    mid: str
    display_name: str


def read_class_labels(path: str | Path) -> dict[str, ClassLabel]:
    """``index,mid,display_name`` rows (header optional, names quoted or not) keyed by mid."""
    path = Path(path)
    if not path.is_file():
        raise MipkitError(f"--labels file {str(path)!r} does not exist; pass AudioSet's class_labels_indices.csv")
    labels: dict[str, ClassLabel] = {}
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise MipkitError(f"--labels {path.name} is not UTF-8 text; pass AudioSet's class_labels_indices.csv") from None
    for number, row in enumerate(csv.reader(text.splitlines(), skipinitialspace=True), 1):
        if not row or row[0].strip().lower() == "index":
            continue
        try:
            index, mid, name = int(row[0]), row[1].strip(), ",".join(row[2:]).strip()
        except (ValueError, IndexError):
            raise MipkitError(
                f"--labels {path.name} line {number} is not 'index,mid,display_name'; pass AudioSet's class_labels_indices.csv"
            ) from None
        labels[mid] = ClassLabel(index, mid, name)
    if not labels:
        raise MipkitError(f"--labels {path.name} has no rows; pass AudioSet's class_labels_indices.csv")
    return labels


def mood_of_mids(labels: dict[str, ClassLabel], taxonomy: Taxonomy) -> dict[str, str]:
    """mid -> class name for the labels that are in the taxonomy, after checking both agree.

    The labeller and this reader rely on the taxonomy's mids and AudioSet indices: a labels file
    that names a mood differently or at another index means one of them is wrong.
    """
    moods: dict[str, str] = {}
    for mid, label in labels.items():
        try:
            moods[mid] = taxonomy.normalize(label.display_name.replace("_", " "))
        except ValueError:
            continue
    for c in taxonomy.classes:
        if c.mid is None:
            continue
        label = labels.get(c.mid)
        if label is None:
            raise MipkitError(
                f"--labels file lacks {c.mid} ({c.display_name}); pass AudioSet's class_labels_indices.csv or the shipped {default_labels_file().name}"
            )
        if moods.get(c.mid) != c.name or (c.audioset_index is not None and label.index != c.audioset_index):
            raise MipkitError(
                f"--labels says {c.mid} is {label.index} {label.display_name!r}, taxonomy {taxonomy.name!r} says "
                f"{c.audioset_index} {c.display_name!r}; check which file is wrong"
            )
    return moods


@dataclass
class Segment:
    ytid: str
    start_s: float
    end_s: float
    mids: list[str]


def _parse_line(fields: list[str]) -> Segment | str:
    if len(fields) < 4:
        return f"expected 'YTID, start_seconds, end_seconds, \"mid,...\"', got {len(fields)} fields"
    ytid = fields[0].strip()
    if not _YTID.match(ytid):
        return f"YTID {ytid!r} is not a YouTube id"
    try:
        start, end = parse_time_s(fields[1].strip(), "start_seconds"), parse_time_s(fields[2].strip(), "end_seconds")
    except ValueError as exc:
        return str(exc)
    if end <= start:
        return f"segment {fields[1].strip()}-{fields[2].strip()} s must have 0 <= start < end"
    # A quoted list is one field; an unquoted one is split by csv, so join what is left.
    mids = [m.strip() for m in ",".join(fields[3:]).split(",") if m.strip()]
    if not mids:
        return "no label mids"
    return Segment(ytid, start, end, mids)


def iter_segments(path: Path):
    """``(line number, Segment or reason)`` for every non-comment, non-blank line."""
    with path.open(newline="", encoding="utf-8-sig") as handle:
        try:
            for number, line in enumerate(handle, 1):  # streamed: unbalanced_train_segments.csv has 2 million lines
                text = line.strip()
                if not text or text.startswith("#"):
                    continue
                fields = next(csv.reader([text], skipinitialspace=True))
                yield number, _parse_line(fields)
        except UnicodeDecodeError:
            raise MipkitError(
                f"--segments {path.name} is not UTF-8 text; pass AudioSet's segment CSV as published (or re-save it as UTF-8)"
            ) from None


@dataclass
class Selection:
    """What the reader kept and why the rest was not requested."""

    sources: list[SourceRequest] = field(default_factory=list)
    problems: list[SampleStatus] = field(default_factory=list)
    kept: list[tuple[str, float, float, str, str]] = field(default_factory=list)  # ytid, start, end, emotion, mid
    counts: Counter = field(default_factory=Counter)


def _window(row: int, start_s: float, emotion: str) -> Window:
    return Window(row=row, start_s=start_s, emotion=emotion, emotion_source="audioset")


def select_segments(
    files: list[Path],
    labels: dict[str, ClassLabel],
    taxonomy: Taxonomy,
    keep_multi_mood: bool = False,
    url_template: str = DEFAULT_URL_TEMPLATE,
) -> Selection:
    """Requests for the mood segments of ``files``; ``bad_row``/``duplicate`` statuses for the rest."""
    if "{id}" not in url_template:
        raise MipkitError(
            f"--url-template {url_template!r} has no '{{id}}'; e.g. 'https://www.youtube.com/watch?v={{id}}'"
        )
    moods = mood_of_mids(labels, taxonomy)
    # Only a labels file listing more than the moods can tell an unknown mid from a non-mood one.
    complete = len(labels) > len(moods)
    selection = Selection()
    by_source: dict[str, SourceRequest] = {}
    seen: set[tuple[str, float]] = set()
    for path in files:
        for number, parsed in iter_segments(path):
            selection.counts["rows"] += 1
            where = f"{path.name} line {number}"
            url = None
            if isinstance(parsed, Segment):
                url = url_template.replace("{id}", parsed.ytid)
                bad = [m for m in parsed.mids if not _MID.match(m) or (complete and m not in labels)]
                if bad:
                    parsed = (
                        f"unknown label mid {bad[0]!r} (not in the --labels file)"
                        if _MID.match(bad[0])
                        else f"label {bad[0]!r} is not an AudioSet mid"
                    )
            if isinstance(parsed, str):
                selection.counts["bad_row"] += 1
                selection.problems.append(SampleStatus(status=BAD_ROW, error=f"{where}: {parsed}", url=url, row=number))
                continue
            found = list(dict.fromkeys(moods[m] for m in parsed.mids if m in moods))
            if not found:
                selection.counts["no_mood"] += 1
                continue
            if len(found) > 1 and not keep_multi_mood:
                selection.counts["multi_mood_skipped"] += 1
                continue
            source_id = parsed.ytid  # already [A-Za-z0-9_-] (checked); sanitize_id would strip YTIDs' leading '-'
            start = round(parsed.start_s, 3)
            if (source_id, start) in seen:
                selection.counts["duplicate"] += 1
                selection.problems.append(
                    SampleStatus(
                        status=DUPLICATE,
                        error=f"{where}: same YTID and start as an earlier row",
                        url=url,
                        pair_id=pair_id_for(source_id, start),
                        source_id=source_id,
                        start_s=start,
                        row=number,
                    )
                )
                continue
            seen.add((source_id, start))
            emotion = found[0]
            request = by_source.setdefault(source_id, SourceRequest(source_id=source_id, url=url))
            request.windows.append(_window(number, start, emotion))
            mid = next(m for m in parsed.mids if moods.get(m) == emotion)
            selection.kept.append((parsed.ytid, start, parsed.end_s, emotion, mid))
            selection.counts["multi_mood_kept" if len(found) > 1 else "kept"] += 1
    selection.sources = list(by_source.values())
    return selection


def write_selection(path: Path, selection: Selection) -> Path:
    """The kept segments as a CSV: the redistributable metadata-only list, and the build's input identity."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["YTID", "start_seconds", "end_seconds", "emotion", "mid"])
        writer.writerows(selection.kept)
    os.replace(tmp, path)
    return path
