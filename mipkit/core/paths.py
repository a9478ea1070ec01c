"""Where mipkit's data files live (recipes, taxonomies, card templates)."""

from __future__ import annotations

import os
from pathlib import Path

BUILD_DIR = "build"  # inside a build's --out folder: shards, statuses, the build record

_CHECKOUT = Path(__file__).resolve().parents[2]  # a source checkout (or an editable install of one)
_INSTALLED = Path(__file__).resolve().parents[1] / "_data"  # a wheel: setup.py ships recipes/ and cards/ here


def data_root() -> Path:
    """The folder holding ``recipes/`` and ``cards/``: ``MIPKIT_DATA``, else the checkout, else the installed copy."""
    if "MIPKIT_DATA" in os.environ:
        return Path(os.environ["MIPKIT_DATA"])
    return _CHECKOUT if (_CHECKOUT / "recipes").is_dir() else _INSTALLED


def recipe_dir() -> Path:
    return data_root() / "recipes"


def taxonomy_dir() -> Path:
    return recipe_dir() / "taxonomies"


def cards_dir() -> Path:
    return data_root() / "cards"
