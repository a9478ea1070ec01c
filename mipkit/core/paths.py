"""Where mipkit's data files live (recipes, taxonomies, card templates)."""

from __future__ import annotations

import os
from pathlib import Path

BUILD_DIR = "build"  # inside a build's --out folder: shards, statuses, the build record

_REPO_ROOT = Path(__file__).resolve().parents[2]


def data_root() -> Path:
    """The folder holding ``recipes/`` and ``cards/`` (``MIPKIT_DATA`` overrides the checkout)."""
    return Path(os.environ.get("MIPKIT_DATA", _REPO_ROOT))


def recipe_dir() -> Path:
    return data_root() / "recipes"


def taxonomy_dir() -> Path:
    return recipe_dir() / "taxonomies"


def cards_dir() -> Path:
    return data_root() / "cards"
