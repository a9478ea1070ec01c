"""``mipkit demo``: the offline end-to-end demo, with the baselines' training step when they are installed."""

from __future__ import annotations

from pathlib import Path

import typer

from mipkit.core import ui
from mipkit.core.errors import NothingBuiltError


def demo(
    out: Path = typer.Option(Path("demo_out"), help="Folder for the demo media, dataset and runs."),
    sources: int = typer.Option(16, min=2, help="Generated sources (each 52 s, 4 clips)."),
    workers: int = typer.Option(2, min=1, help="Build workers."),
    train: bool = typer.Option(True, help="Go on to a tiny HG-CLIM training and evaluation."),
) -> None:
    """Offline end-to-end demo: generated media served on 127.0.0.1, built through yt-dlp, trained, browsable."""
    from mipkit.cli.build import print_build_summary
    from mipkit.demo.demo import run_demo
    from mipkit.release.browse import build_site

    learned: list[bool] = []
    run_demo(
        out,
        sources=sources,
        workers=workers,
        show_summary=print_build_summary,
        train_step=(lambda dataset_dir, run_dir: learned.append(_train_step(dataset_dir, run_dir))) if train else None,
    )
    index = build_site(out / "dataset")
    if learned and learned[0] is not None:
        ui.stdout.print(f"retrieval gallery: {(out / 'runs' / 'hgclim-tiny' / 'gallery' / 'index.html').resolve()}")
    ui.stdout.print(f"dataset browser: {index.resolve()}")
    if learned and learned[0] is False:
        raise NothingBuiltError("the demo's tiny HG-CLIM stayed below 3x chance on the test split; see the table above")


def _train_step(dataset_dir: Path, run_dir: Path) -> bool | None:
    """The demo's last step, from the baselines (composed here: the demo package does not import them).
    Returns whether the model learned (test MRR at least 3x chance both ways); None when skipped."""
    try:
        from baselines.api import train_and_evaluate
    except ImportError:
        ui.console.print("[yellow]baselines not installed: skipping the training step[/yellow]")
        return None
    ui.console.print("[bold]3/3[/bold] training a tiny HG-CLIM on the demo pairs and evaluating it")
    return bool(train_and_evaluate(dataset_dir, run_dir, epochs=30).get("learned"))
