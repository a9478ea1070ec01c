"""Emotion taxonomies are data files in ``recipes/taxonomies/``; this module reads them."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from mipkit.errors import MipkitError
from mipkit.paths import taxonomy_dir


@dataclass(frozen=True)
class EmotionClass:
    name: str
    display_name: str
    mid: str | None = None
    audioset_index: int | None = None


@dataclass(frozen=True)
class Taxonomy:
    name: str
    classes: tuple[EmotionClass, ...]
    description: str = ""

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.classes]

    @cached_property
    def _lookup(self) -> dict[str, str]:
        table: dict[str, str] = {}
        for c in self.classes:
            for alias in (c.name, c.display_name, c.mid):
                if alias:
                    table[alias.strip().lower()] = c.name
        return table

    def normalize(self, label: str) -> str:
        """Map a manifest label to a class name (case-insensitive; display names and mids accepted).

        Raises ``ValueError`` with the allowed labels when the label is not in the taxonomy.
        """
        key = label.strip().lower()
        if key in self._lookup:
            return self._lookup[key]
        raise ValueError(f"emotion {label!r} is not in taxonomy {self.name!r}; allowed: {', '.join(self.names)}")

    def index(self, name: str) -> int:
        return self.names.index(name)


def load_taxonomy(name_or_path: str) -> Taxonomy:
    """Load a taxonomy by name (``recipes/taxonomies/<name>.toml``) or from a TOML path."""
    path = Path(name_or_path)
    if not path.suffix:
        path = taxonomy_dir() / f"{name_or_path}.toml"
    if not path.is_file():
        known = sorted(p.stem for p in taxonomy_dir().glob("*.toml"))
        raise MipkitError(f"taxonomy {name_or_path!r} not found; known taxonomies: {', '.join(known)}")
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    classes = tuple(
        EmotionClass(
            name=c["name"],
            display_name=c.get("display_name", c["name"]),
            mid=c.get("mid"),
            audioset_index=c.get("audioset_index"),
        )
        for c in data.get("classes", [])
    )
    if not classes:
        raise MipkitError(f"taxonomy file {path.name} declares no [[classes]]; add at least one")
    return Taxonomy(name=data.get("name", path.stem), classes=classes, description=data.get("description", ""))
