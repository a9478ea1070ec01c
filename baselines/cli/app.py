"""The training app: the only place that registers the baseline commands.

``train_app`` is mounted by ``mipkit train baseline`` and run by ``python -m baselines.train`` (also under
``torchrun``); ``eval_command`` is ``mipkit eval``.
"""

from __future__ import annotations

import typer

from baselines.cli.hgclim import eval_command, hgclim
from baselines.cli.iiclvm import register as register_sequence_models

__all__ = ["eval_command", "run_train_app", "train_app"]

train_app = typer.Typer(
    help="Train a baseline model on an image-music pair dataset.", no_args_is_help=True, add_completion=False
)


@train_app.callback()
def _train_group() -> None:
    """Train a baseline model on an image-music pair dataset."""


train_app.command("hgclim")(hgclim)
register_sequence_models(train_app)


def run_train_app(prog_name: str = "python -m baselines.train") -> int:
    """Run ``train_app`` as a program (``python -m baselines.train``; torchrun uses the same)."""
    try:
        train_app(prog_name=prog_name)
    except SystemExit as e:
        return int(e.code or 0) if not isinstance(e.code, str) else 1
    return 0
