"""Emotion taxonomies are data files in ``recipes/taxonomies/``; this module reads them."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from mipkit.core.errors import MipkitError
from mipkit.core.paths import taxonomy_dir


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
        raise MipkitError(f"taxonomy {name_or_path!r} not found; known taxonomies: {', '.join(known_taxonomies())}")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise MipkitError(f"taxonomy file {path.name} is not valid TOML: {exc}") from None
    if data.get("kind") == "mapping":
        raise MipkitError(
            f"{path.name} is a mapping table, not a taxonomy; load it with mipkit.config.mapping.load_mapping"
        )
    raw_classes = data.get("classes", [])
    if not raw_classes:
        raise MipkitError(f"taxonomy file {path.name} declares no [[classes]]; add at least one")
    nameless = [i + 1 for i, c in enumerate(raw_classes) if not str(c.get("name", "")).strip()]
    if nameless:
        raise MipkitError(f"taxonomy file {path.name}: class #{nameless[0]} has no name; give every [[classes]] a name")
    classes = tuple(
        EmotionClass(
            name=c["name"],
            display_name=c.get("display_name", c["name"]),
            mid=c.get("mid"),
            audioset_index=c.get("audioset_index"),
        )
        for c in raw_classes
    )
    seen: dict[str, str] = {}
    for c in classes:
        for alias in filter(None, (c.name, c.display_name, c.mid)):
            owner = seen.setdefault(alias.strip().lower(), c.name)
            if owner != c.name:
                raise MipkitError(
                    f"taxonomy file {path.name}: {alias!r} names both {owner!r} and {c.name!r} (labels match case-insensitively); rename one"
                )
    return Taxonomy(name=data.get("name", path.stem), classes=classes, description=data.get("description", ""))


def known_taxonomies() -> list[str]:
    """Names of the taxonomies in ``recipes/taxonomies/`` (mapping tables excluded)."""
    names = []
    for path in sorted(taxonomy_dir().glob("*.toml")):
        try:
            if tomllib.loads(path.read_text(encoding="utf-8")).get("kind") != "mapping":
                names.append(path.stem)
        except tomllib.TOMLDecodeError:
            continue
    return names
