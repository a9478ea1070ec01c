"""Stage 3, process: turn one source's windows into pairs (clip + keyframe + label).

``build_source`` runs fetch and process for one source and always returns one status per
requested window, so nothing is lost whatever fails. Plain http(s) media takes the fast path (one
ffmpeg per window through the relay, ``mipkit.pipeline.windows``); other formats, or a recipe with
``force_keyframes_at_cuts``, take yt-dlp's section download.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path
from urllib.parse import urlparse

from mipkit.config.recipe import Recipe
from mipkit.core import records
from mipkit.core.ids import pair_id_for
from mipkit.core.records import Pair, SampleStatus, SourceRequest, Window
from mipkit.media.ffmpeg import MediaError, decode_audio, encode_flac, extract_frame, fit_length
from mipkit.media.relay import MediaRelay, NotHttpError, Ticket
from mipkit.pipeline import strategy
from mipkit.pipeline.fetch import Fetcher, FetchError, SourceInfo, classify_error, effective_proxy, one_line, redact
from mipkit.pipeline.politeness import HostGate
from mipkit.pipeline.strategy import SourceTransfer, needs_streams, stream_formats
from mipkit.pipeline.windows import SourceWindows, check_resolved_urls, fast_path_formats


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


def _pair(
    request: SourceRequest,
    source: SourceInfo,
    start: float,
    window: Window,
    flac: bytes,
    jpeg: bytes | None,
    recipe: Recipe,
) -> Pair:
    return Pair(
        pair_id=pair_id_for(request.source_id, start),
        source_id=request.source_id,
        source_url=request.url,
        start_s=start,
        end_s=round(start + recipe.clip.seconds, 3),
        audio_flac=flac,
        image_jpeg=jpeg,
        emotion=window.emotion,
        emotion_source=(window.emotion_source or "manifest") if window.emotion else None,
        emotion_score=window.emotion_score if window.emotion else None,
        title=window.title or source.title,
        uploader=source.uploader,
        license=window.license or source.license,
        fetch_strategy=strategy.SECTIONS,  # the streams strategy replaces it
    )


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
    return _pair(request, source, start, window, encode_flac(pcm, clip.sample_rate), image, recipe)


def _register(relay: MediaRelay, fmt: dict):
    """A relay ticket for one resolved format, with yt-dlp's headers and the cookies for its URL."""
    headers = dict(fmt.get("http_headers") or {})
    if fmt.get("_mipkit_cookie"):
        headers["Cookie"] = fmt["_mipkit_cookie"]
    return relay.register(fmt["url"], headers)


def _fast_path(
    request: SourceRequest,
    source: SourceInfo,
    formats: tuple[dict, dict | None],
    recipe: Recipe,
    source_dir: Path,
    gate: HostGate | None = None,
) -> tuple[list[Pair], list[SampleStatus]]:
    """Every window by one ffmpeg through the relay, read as the fetch strategy says (``mipkit.pipeline.strategy``)."""
    cfg = recipe.ytdlp
    pairs: list[Pair] = []
    streams = stream_formats(source.info, recipe)
    host_url = formats[0]["url"]
    asked = recipe.fetch.strategy
    mode = asked if streams is not None else strategy.SECTIONS  # no plain http(s) stream: sections only
    if mode == strategy.AUTO:
        remembered = gate.remembered_strategy(host_url) if gate is not None else ""
        mode = strategy.STREAMS if remembered == strategy.STREAMS else strategy.SECTIONS
    with MediaRelay(
        source_dir / "relay", proxy=effective_proxy(cfg), timeout=recipe.socket_timeout_s, retries=cfg.retries
    ) as relay:
        tickets: dict[str, Ticket] = {}  # one per URL: a stream that is also the section file is fetched once

        def ticket_of(fmt: dict) -> Ticket:
            if fmt["url"] not in tickets:
                tickets[fmt["url"]] = _register(relay, fmt)
            return tickets[fmt["url"]]

        def reader(chosen: tuple[dict, dict | None], whole: bool) -> SourceWindows:
            audio_format, video_format = chosen
            audio = ticket_of(audio_format)
            video = ticket_of(video_format) if recipe.clip.image and video_format is not None else None
            return SourceWindows(
                recipe,
                relay,
                audio,
                video,
                audio_format.get("ext"),
                source_dir,
                lambda message: classify_error(redact(message, cfg)),
                gate=gate,
                url=request.url,
                whole=whole,
            )

        windows_of = reader(streams, True) if mode == strategy.STREAMS else reader(formats, False)
        falls_back = asked == strategy.AUTO and mode == strategy.SECTIONS
        min_rate = recipe.fetch.min_section_kib_s * 1024
        if falls_back:
            for section_ticket in windows_of.tickets():
                section_ticket.min_bytes_per_s = min_rate
        transfer = SourceTransfer(windows_of.tickets())
        duration = source.duration
        if duration is None and any(w.start_s is None for w in request.windows):
            duration = windows_of.duration()
        windows, statuses = resolve_windows(request, duration, recipe)
        for start, window in windows:
            base = dict(
                pair_id=pair_id_for(request.source_id, start),
                source_id=request.source_id,
                url=request.url,
                start_s=start,
                row=window.row,
            )
            seen = [len(t.faults) for t in windows_of.tickets()]
            read_by = windows_of
            outcome = windows_of.run(start)
            why = ""
            if falls_back:
                why = needs_streams(windows_of.tickets(), seen, outcome.status, outcome.error)
                if not why and outcome.status == records.OK and transfer.slow_since(min_rate):
                    why = "slow"
                if why:
                    for section_ticket in windows_of.tickets():
                        section_ticket.min_bytes_per_s = 0.0
                    falls_back = False
                    # Range ignored: the relay already holds the section formats whole, so read on from those.
                    windows_of = reader(formats if why == "no-range" else streams, True)
                    if gate is not None:
                        gate.remember_strategy(host_url, strategy.STREAMS)
                    if outcome.status != records.OK:
                        read_by, outcome = windows_of, windows_of.run(start)  # the failed window, from the streams
            # a host that ignored Range had the window read from the whole file already: that is streams
            used = strategy.STREAMS if read_by.whole or why == "no-range" else strategy.SECTIONS
            if outcome.status == records.OK:
                pair = _pair(request, source, start, window, outcome.flac, outcome.jpeg, recipe)
                pairs.append(dataclasses.replace(pair, fetch_strategy=used))
            error = one_line(redact(outcome.error, cfg))
            statuses.append(SampleStatus(status=outcome.status, error=error, fetch_strategy=used, **base))
    return pairs, statuses


class _TooShort(Exception):
    pass


def build_source(
    request: SourceRequest, recipe: Recipe, workdir: Path, gate: HostGate | None = None
) -> tuple[list[Pair], list[SampleStatus]]:
    """Fetch and process every window of one source. Temporary files are removed in all cases.

    ``gate`` holds the host's politeness and rate-limit breaker (shared by every worker)."""
    source_dir = workdir / request.source_id
    fetcher = Fetcher(
        dataclasses.replace(recipe.ytdlp, socket_timeout=recipe.socket_timeout_s),
        private_dir=workdir / ".private",
        gate=gate,
    )
    auto = recipe.clip.clips_per_source
    try:
        source = fetcher.extract(request.url)
        check_resolved_urls(source.info)
    except FetchError as exc:
        return [], fail_all(request, exc.status, str(exc), auto)
    except NotHttpError as exc:
        return [], fail_all(request, records.DOWNLOAD_ERROR, f"refused: {exc}", auto)
    # The relay speaks to http(s) proxies only; a SOCKS proxy keeps yt-dlp's own downloader (sections).
    relay_proxy_ok = urlparse(effective_proxy(recipe.ytdlp) or "http://").scheme in ("http", "https")
    fast = not recipe.ytdlp.force_keyframes_at_cuts and relay_proxy_ok
    formats = fast_path_formats(source.info) if fast else None
    source_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        if formats is not None:
            return _fast_path(request, source, formats, recipe, source_dir, gate)
        return _section_path(request, source, fetcher, recipe, source_dir)
    finally:
        shutil.rmtree(source_dir, ignore_errors=True)


def _section_path(
    request: SourceRequest, source: SourceInfo, fetcher: Fetcher, recipe: Recipe, source_dir: Path
) -> tuple[list[Pair], list[SampleStatus]]:
    """yt-dlp downloads the sections (HLS/DASH-segment formats, or ``force_keyframes_at_cuts``)."""
    duration = source.duration
    direct = fast_path_formats(source.info)
    if duration is None and direct is not None and any(w.start_s is None for w in request.windows):
        # Direct media links carry no duration: read it from the container, through the relay like every read.
        with MediaRelay(
            source_dir / "relay", proxy=effective_proxy(recipe.ytdlp), timeout=recipe.socket_timeout_s
        ) as relay:
            ticket = _register(relay, direct[0])
            duration = SourceWindows(
                recipe, relay, ticket, None, direct[0].get("ext"), source_dir, classify_error
            ).duration()
    windows, statuses = resolve_windows(request, duration, recipe)
    if not windows:
        return [], statuses
    pairs: list[Pair] = []
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
        base = dict(
            pair_id=pair_id,
            source_id=request.source_id,
            url=request.url,
            start_s=start,
            row=window.row,
            fetch_strategy=strategy.SECTIONS,
        )
        section = sections.get(round(start, 3))
        if section is None:
            statuses.append(
                SampleStatus(status=records.DOWNLOAD_ERROR, error="yt-dlp produced no file for this section", **base)
            )
            continue
        try:
            pairs.append(_make_pair(request, source, start, window, section, recipe))
            statuses.append(SampleStatus(status=records.OK, **base))
        except _TooShort as exc:
            statuses.append(SampleStatus(status=records.TOO_SHORT, error=str(exc), **base))
        except MediaError as exc:
            statuses.append(SampleStatus(status=records.DECODE_ERROR, error=one_line(str(exc)), **base))
    return pairs, statuses
