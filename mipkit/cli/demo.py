"""``mipkit demo``: the offline end-to-end demo, with the baselines' training step when they are installed."""

from __future__ import annotations

from pathlib import Path

import typer

from mipkit.core import ui


def demo(
    out: Path = typer.Option(Path("demo_out"), help="Folder for the demo media, dataset and runs."),
    sources: int = typer.Option(16, min=2, help="Generated sources (each 40 s, 3 clips)."),
    workers: int = typer.Option(2, min=1, help="Build workers."),
    train: bool = typer.Option(True, help="Go on to a tiny HG-CLIM training and evaluation."),
) -> None:
    """Offline end-to-end demo: generated media served on 127.0.0.1, built through yt-dlp."""
    from mipkit.cli.build import print_build_summary
    from mipkit.demo.demo import run_demo

    run_demo(
        out,
        sources=sources,
        workers=workers,
        show_summary=print_build_summary,
        train_step=_train_step if train else None,
    )


def _train_step(dataset_dir: Path, run_dir: Path) -> None:
    """The demo's last step, from the baselines (composed here: the demo package does not import them)."""
    try:
        from baselines.api import train_and_evaluate
    except ImportError:
        ui.console.print("[yellow]baselines not installed: skipping the training step[/yellow]")
        return
    ui.console.print("[bold]3/3[/bold] training a tiny HG-CLIM on the demo pairs and evaluating it")
    train_and_evaluate(dataset_dir, run_dir)
