"""``mipkit search RUN``: the command (mounted by ``mipkit.cli`` with the other baseline commands)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import typer

from mipkit.errors import MipkitError


def search_command(
    run: Path = typer.Argument(..., help="run folder (the --out of `mipkit train baseline ...`)"),
    image: Optional[Path] = typer.Option(None, "--image", help="HG-CLIM: an image file; finds its music"),
    music: Optional[Path] = typer.Option(None, "--music", help="HG-CLIM: an audio or video file; finds images for 10 s of it"),
    start: Optional[float] = typer.Option(None, "--start", help="--music: start of the 10 s (default: the middle of the file)"),
    video_features: Optional[Path] = typer.Option(None, "--video-features", help="II-CLVM: [T, 1024] frame features (.npy); finds its music"),
    library: Optional[str] = typer.Option(None, "--library", help="dataset folder or Hub id to search (default: the run's dataset)"),
    k: int = typer.Option(10, "-k", "--top", min=1, help="results to return"),
    json_out: bool = typer.Option(False, "--json", help="print JSON (pair_id, score, source_url, start_s, ...) instead of a table"),
    checkpoint: str = typer.Option("latest", "--checkpoint", help="latest | PATH"),
    device: str = typer.Option("auto", "--device", help="auto | cpu | cuda"),
) -> None:
    """Search a library with a trained run: music for an image (or a video's features), images for a clip."""
    from rich.console import Console

    from baselines.search import render_results, search_run

    err = Console(stderr=True, highlight=False)
    try:
        result = search_run(run, image=image, music=music, video_features=video_features, library=library, k=k,
                            start=start, checkpoint=checkpoint, device=device, log=lambda msg: err.print(f"[dim]{msg}[/dim]"))
    except MipkitError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(code=2)
    if json_out:
        typer.echo(json.dumps(result, indent=2))
    else:
        Console().print(render_results(result))
