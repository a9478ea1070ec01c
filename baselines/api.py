"""The one module through which ``mipkit`` reaches the baselines (an import contract in pyproject.toml says so).

``mipkit.cli`` mounts the training app and the evaluation command and runs the demo's training step;
``mipkit.labelling`` builds the PaSST music encoder. Everything heavy (torch) is imported when called.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def train_and_eval_commands() -> tuple[Any, Any]:
    """``(train_app, eval_command)``: the typer app for ``mipkit train baseline`` and ``mipkit eval``."""
    from baselines.cli.app import eval_command, train_app

    return train_app, eval_command


def train_and_evaluate(dataset_dir: str | Path, run_dir: str | Path, **options: Any) -> dict:
    """The demo's training step (``baselines.train.train_and_evaluate``)."""
    from baselines.train import train_and_evaluate as run

    return run(dataset_dir, run_dir, **options)


def search_run(run_dir: str | Path, **query: Any) -> dict:
    """``mipkit search``: the top-k of a library for one query (``baselines.eval.search.search_run``)."""
    from baselines.eval.search import search_run as run

    return run(run_dir, **query)


def render_search_results(result: dict) -> Any:
    """The rich table of a search result."""
    from baselines.eval.search import render_results

    return render_results(result)


def build_passt_encoder(preset: str, seed: int, weights_path: Path | None) -> Any:
    """The PaSST music encoder the labeller runs; a bad checkpoint raises ``WeightsError``."""
    from baselines.models.encoders import ModelConfig, build_music_encoder

    return build_music_encoder(ModelConfig(preset=preset, init_seed=seed), weights_path)


def weights_error() -> type[Exception]:
    """The error type of a missing or unusable local checkpoint."""
    from baselines.models.encoders import WeightsError

    return WeightsError
