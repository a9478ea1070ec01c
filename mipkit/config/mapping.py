"""Mapping tables between label sets, as data files in ``recipes/taxonomies/``.

E.g. EMO-CLIM's image-emotion -> music-mood map, used by the emotion-aligned evaluation, whose image
and music sets use different label sets. Format: ``kind = "mapping"``, ``target_taxonomy``, an
optional ``source_taxonomy``, ``unmapped = [...]`` and a ``[map]`` table (see the shipped files).
"""

from __future__ import annotations

import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mipkit.config.taxonomy import Taxonomy, load_taxonomy
from mipkit.core.errors import MipkitError
from mipkit.core.paths import taxonomy_dir


@dataclass(frozen=True)
class LabelMapping:
    """Source label -> target class; ``unmapped`` labels are known but have no counterpart."""

    name: str
    target: Taxonomy
    table: dict[str, str]
    unmapped: frozenset[str] = frozenset()
    source: Taxonomy | None = None
    description: str = ""

    def map(self, label: str | None) -> str | None:
        if label is None:
            return None
        key = label.strip().lower()
        if self.source is not None:
            key = self.source.normalize(label)  # display names and mids of the source taxonomy too
        if key in self.table:
            return self.table[key]
        if key in self.unmapped:
            return None
        raise ValueError(
            f"label {label!r} is not in mapping {self.name!r}; known: {', '.join(sorted(self.table) + sorted(self.unmapped))}"
        )


def load_mapping(name_or_path: str | Path) -> LabelMapping:
    """Load ``recipes/taxonomies/<name>.toml`` (or a path) written in the mapping format."""
    path = Path(name_or_path)
    if not path.suffix:
        path = taxonomy_dir() / f"{name_or_path}.toml"
    if not path.is_file():
        known = sorted(p.stem for p in taxonomy_dir().glob("*.toml") if "[map]" in p.read_text(encoding="utf-8"))
        raise MipkitError(
            f"mapping {str(name_or_path)!r} not found; known mappings: {', '.join(known) or 'none'} (or pass a .toml path)"
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise MipkitError(f"mapping {path.name} is not valid TOML: {exc}") from None
    where = f"mapping {path.name}"
    if not isinstance(data.get("map"), dict) or not data["map"]:
        raise MipkitError(f'{where} has no [map] table; add lines like `fear = "scary"`')
    if not data.get("target_taxonomy"):
        raise MipkitError(
            f'{where} has no target_taxonomy; name the taxonomy its labels map to, e.g. target_taxonomy = "audioset_moods"'
        )
    target = load_taxonomy(data["target_taxonomy"])
    source = load_taxonomy(data["source_taxonomy"]) if data.get("source_taxonomy") else None

    def source_key(label: str) -> str:
        if source is None:
            return label.strip().lower()
        try:
            return source.normalize(label)
        except ValueError as exc:
            raise MipkitError(f"{where}: {exc}") from None

    table: dict[str, str] = {}
    for key, value in data["map"].items():
        if not isinstance(value, str):
            raise MipkitError(f"{where}: [map] {key} = {value!r} must be a string label of {target.name!r}")
        norm = source_key(key)
        if norm in table:
            raise MipkitError(f"{where}: [map] lists {key!r} twice (labels match case-insensitively); keep one line")
        try:
            table[norm] = target.normalize(value)
        except ValueError as exc:
            raise MipkitError(f"{where}: [map] {key} = {value!r}: {exc}") from None
    unmapped = frozenset(source_key(u) for u in data.get("unmapped", []))
    if unmapped & set(table):
        raise MipkitError(
            f"{where}: {', '.join(sorted(unmapped & set(table)))} is both in [map] and in unmapped; keep it in one place"
        )
    return LabelMapping(data.get("name", path.stem), target, table, unmapped, source, data.get("description", ""))


def map_labels(labels: Iterable[str | None], mapping: LabelMapping | str | Path) -> list[str | None]:
    """Map each label (None and ``unmapped`` labels give None; unknown labels raise ValueError).

    For the emotion-aligned evaluation: an image and a clip are relevant when
    ``map_labels([image_label], m)[0] == clip_label``.
    """
    if not isinstance(mapping, LabelMapping):
        mapping = load_mapping(mapping)
    return [mapping.map(label) for label in labels]
