"""Stage 3, process: turn one source's fetched sections into pairs (clip + keyframe + label).

``build_source`` runs fetch and process for one source and always returns one status per
requested window, so nothing is lost whatever fails.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from mipkit.config.recipe import Recipe
from mipkit.core import records
from mipkit.core.ids import pair_id_for
from mipkit.core.records import Pair, SampleStatus, SourceRequest, Window
from mipkit.media.ffmpeg import MediaError, decode_audio, encode_flac, extract_frame, fit_length
from mipkit.pipeline.fetch import Fetcher, FetchError, SourceInfo, one_line
from mipkit.pipeline.politeness import HostGate


def plan_windows(duration: float, seconds: float, count: int) -> list[float]:
    """Start times of ``count`` evenly spaced windows: each centred in one of ``count`` equal parts."""
    if duration < seconds:
        return []
    part = duration / count
    starts = [min(max(k * part + (part - seconds) / 2, 0.0), duration - seconds) for k in range(count)]
    return sorted({round(s, 3) for s in starts})


def resolve_windows(
    request: SourceRequest, duration: float | None, recipe: Recipe
) -> tuple[list[tuple[float, Window]], list[SampleStatus]]:
    """Concrete (start, window) pairs for a source, and ``too_short`` statuses for what cannot fit."""
    seconds = recipe.clip.seconds
    resolved: dict[float, Window] = {}
    failed: list[SampleStatus] = []
    tolerance = recipe.clip.max_short_fraction * seconds

    def too_short(window: Window, start: float | None, why: str) -> None:
        failed.append(SampleStatus.of_window(records.TOO_SHORT, why, request.source_id, request.url, start, window.row))

    for window in request.windows:
        if window.start_s is None:
            starts = plan_windows(duration, seconds, recipe.clip.clips_per_source) if duration is not None else []
            if not starts:
                for _ in range(recipe.clip.clips_per_source):
                    too_short(window, None, f"source lasts {duration or 0:.1f} s, shorter than one {seconds:g}-s clip")
            for start in starts:
                resolved.setdefault(start, window)
        else:
            start = round(window.start_s, 3)
            if duration is not None and start + seconds > duration + tolerance:
                too_short(
                    window, start, f"window {start:g}-{start + seconds:g} s ends after the source ({duration:.1f} s)"
                )
            elif start in resolved and resolved[start].start_s is None:
                resolved[start] = window  # an explicit row wins over an automatic window at the same time
            else:
                resolved.setdefault(start, window)
    return sorted(resolved.items()), failed


def fail_all(request: SourceRequest, status: str, error: str, count_auto: int) -> list[SampleStatus]:
    """One status per requested window of ``request`` (``count_auto`` for a window without start)."""
    out = []
    for window in request.windows:
        n = 1 if window.start_s is not None else count_auto
        for _ in range(n):
            start = window.start_s
            out.append(SampleStatus.of_window(status, error, request.source_id, request.url, start, window.row))
    return out


def _make_pair(
    request: SourceRequest, source: SourceInfo, start: float, window: Window, section: Path, recipe: Recipe
) -> Pair:
    clip = recipe.clip
    samples = int(round(clip.seconds * clip.sample_rate))
    pcm = decode_audio(str(section), clip.seconds + 0.05, clip.sample_rate, channels=clip.channels)
    pcm = fit_length(pcm, samples, clip.max_short_fraction)
    if pcm is None:
        raise _TooShort(f"decoded audio is shorter than {clip.seconds:g} s")
    image = None
    if clip.image:
        image = extract_frame(str(section), clip.image_position * clip.seconds, clip.image_max_side, clip.image_quality)
    return Pair(
        pair_id=pair_id_for(request.source_id, start),
        source_id=request.source_id,
        source_url=request.url,
        start_s=start,
        end_s=round(start + clip.seconds, 3),
        audio_flac=encode_flac(pcm, clip.sample_rate),
        image_jpeg=image,
        emotion=window.emotion,
        emotion_source=(window.emotion_source or "manifest") if window.emotion else None,
        emotion_score=window.emotion_score if window.emotion else None,
        title=window.title or source.title,
        uploader=source.uploader,
        license=window.license or source.license,
    )


class _TooShort(Exception):
    pass


def build_source(
    request: SourceRequest, recipe: Recipe, workdir: Path, gate: HostGate | None = None
) -> tuple[list[Pair], list[SampleStatus]]:
    """Fetch and process every window of one source. Temporary files are removed in all cases.

    ``gate`` holds the host's politeness and rate-limit breaker (shared by every worker)."""
    fetcher = Fetcher(recipe.ytdlp, gate)
    auto = recipe.clip.clips_per_source
    try:
        source = fetcher.extract(request.url)
    except FetchError as exc:
        return [], fail_all(request, exc.status, str(exc), auto)
    windows, statuses = resolve_windows(request, source.duration, recipe)
    if not windows:
        return [], statuses
    source_dir = workdir / request.source_id
    pairs: list[Pair] = []
    try:
        ranges = [(start, start + recipe.clip.seconds) for start, _ in windows]
        try:
            sections = fetcher.download_sections(source, request.source_id, ranges, source_dir)
        except FetchError as exc:
            return [], statuses + [
                SampleStatus(
                    status=exc.status,
                    error=str(exc),
                    pair_id=pair_id_for(request.source_id, s),
                    source_id=request.source_id,
                    url=request.url,
                    start_s=s,
                    row=w.row,
                )
                for s, w in windows
            ]
        for start, window in windows:
            pair_id = pair_id_for(request.source_id, start)
            base = dict(pair_id=pair_id, source_id=request.source_id, url=request.url, start_s=start, row=window.row)
            section = sections.get(round(start, 3))
            if section is None:
                statuses.append(
                    SampleStatus(
                        status=records.DOWNLOAD_ERROR, error="yt-dlp produced no file for this section", **base
                    )
                )
                continue
            try:
                pairs.append(_make_pair(request, source, start, window, section, recipe))
                statuses.append(SampleStatus(status=records.OK, **base))
            except _TooShort as exc:
                statuses.append(SampleStatus(status=records.TOO_SHORT, error=str(exc), **base))
            except MediaError as exc:
                statuses.append(SampleStatus(status=records.DECODE_ERROR, error=one_line(str(exc)), **base))
    finally:
        shutil.rmtree(source_dir, ignore_errors=True)
    return pairs, statuses
