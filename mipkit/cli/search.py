"""``mipkit search RUN``: music for an image (or a video's features), images for a clip, with a trained run.

The query clip is decoded here with ffmpeg (any audio or video file), then the baselines embed it and
search the library's cached FAISS index (``baselines.eval.search``, reached through ``baselines.api``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import typer

from mipkit.core.errors import MipkitError

CLIP_SECONDS = 10.0
SAMPLE_RATE = 32_000


def music_window(path: Path, start: float | None, seconds: float = CLIP_SECONDS) -> np.ndarray:
    """``seconds`` of mono audio at 32 kHz from ``start``, or from the middle of the file; zero-padded."""
    from mipkit.media.ffmpeg import MediaError, decode_audio, duration_of, probe

    if not path.is_file():
        raise MipkitError(f"--music: file '{path.name}' not found")
    try:
        if start is None:
            duration = duration_of(probe(str(path))) or seconds
            start = max(0.0, (duration - seconds) / 2)
        audio = decode_audio(str(path), seconds, SAMPLE_RATE, start_s=float(start))
    except MediaError as e:
        raise MipkitError(
            f"--music: '{path.name}' cannot be decoded ({e}); pass an audio or video file ffmpeg reads"
        ) from None
    return np.pad(audio, (0, max(0, int(seconds * SAMPLE_RATE) - audio.size)))


def search(
    run: Path = typer.Argument(..., help="run folder (the --out of `mipkit train baseline ...`)"),
    image: Optional[Path] = typer.Option(None, "--image", help="HG-CLIM: an image file; finds its music"),
    music: Optional[Path] = typer.Option(
        None, "--music", help="HG-CLIM: an audio or video file; finds images for 10 s of it"
    ),
    start: Optional[float] = typer.Option(
        None, "--start", help="--music: start of the 10 s (default: the middle of the file)"
    ),
    video_features: Optional[Path] = typer.Option(
        None, "--video-features", help="II-CLVM: [T, 1024] frame features (.npy); finds its music"
    ),
    library: Optional[str] = typer.Option(
        None, "--library", help="dataset folder or Hub id to search (default: the run's dataset)"
    ),
    k: int = typer.Option(10, "-k", "--top", min=1, help="results to return"),
    json_out: bool = typer.Option(
        False, "--json", help="print JSON (pair_id, score, source_url, start_s, ...) instead of a table"
    ),
    checkpoint: str = typer.Option("latest", "--checkpoint", help="latest | PATH"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
) -> None:
    """Search a library with a trained run: music for an image (or a video's features), images for a clip."""
    from baselines.api import render_search_results, search_run
    from mipkit.core import ui

    waveform = music_window(music, start) if music is not None else None
    result = search_run(
        run,
        image=image,
        music=waveform,
        video_features=video_features,
        library=library,
        k=k,
        query_name=music.name if music is not None else None,
        checkpoint=checkpoint,
        device=device,
        log=lambda msg: ui.console.print(f"[dim]{msg}[/dim]"),
    )
    if json_out:
        typer.echo(json.dumps(result, indent=2))
    else:
        ui.stdout.print(render_search_results(result))
