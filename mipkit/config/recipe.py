"""Recipes are data: a TOML file in ``recipes/`` says how a dataset is built.

``load_recipe`` reads one into typed sections; CLI flags override single values with
``Recipe.with_overrides({"clip.clips_per_source": 3})``.
"""

from __future__ import annotations

import dataclasses
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mipkit.config.politeness import Politeness
from mipkit.core.errors import MipkitError
from mipkit.core.paths import recipe_dir


@dataclass(frozen=True)
class ClipConfig:
    seconds: float = 10.0
    sample_rate: int = 32000
    channels: int = 1
    audio_format: str = "flac"
    image: bool = True
    image_position: float = 0.5
    image_format: str = "jpeg"
    image_quality: int = 90
    image_max_side: int = 512
    clips_per_source: int = 1
    max_short_fraction: float = 0.01


@dataclass(frozen=True)
class SplitConfig:
    train: float = 0.8
    validation: float = 0.1
    test: float = 0.1
    seed: int = 0
    stratify_by: str = ""  # "" = by source only; "emotion" = stratified by label, still by source

    def ratios(self) -> dict[str, float]:
        return {"train": self.train, "validation": self.validation, "test": self.test}


@dataclass(frozen=True)
class ShardConfig:
    sources_per_shard: int = 32
    fetch_threads: int = 4


@dataclass(frozen=True)
class YtdlpConfig:
    format: str = "bv*[height<=480]+ba/b[height<=480]/bv*+ba/b"
    retries: int = 3
    extract_retries: int = 2
    retry_backoff_s: float = 5.0
    sleep_interval: float = 0.0
    socket_timeout: float = 30.0
    force_keyframes_at_cuts: bool = True
    cookiefile: str = ""
    proxy: str = ""
    cookies_from_browser: str = ""  # BROWSER[:PROFILE], yt-dlp's --cookies-from-browser


@dataclass(frozen=True)
class Recipe:
    name: str
    dataset: dict[str, Any] = field(default_factory=dict)
    clip: ClipConfig = field(default_factory=ClipConfig)
    taxonomy: str = "audioset_moods"
    splits: SplitConfig = field(default_factory=SplitConfig)
    shards: ShardConfig = field(default_factory=ShardConfig)
    ytdlp: YtdlpConfig = field(default_factory=YtdlpConfig)
    politeness: Politeness = field(default_factory=Politeness)

    def with_overrides(self, overrides: dict[str, Any]) -> Recipe:
        """Return a copy with ``section.key`` values replaced (``None`` values are ignored)."""
        recipe = self
        for dotted, value in overrides.items():
            if value is None:
                continue
            section, _, key = dotted.partition(".")
            if not key:
                recipe = dataclasses.replace(recipe, **{section: value})
                continue
            current = getattr(recipe, section)
            recipe = dataclasses.replace(recipe, **{section: dataclasses.replace(current, **{key: value})})
        recipe.validate()
        return recipe

    def validate(self) -> None:
        ratios = self.splits.ratios()
        if any(r < 0 for r in ratios.values()) or abs(sum(ratios.values()) - 1.0) > 1e-6:
            raise MipkitError(f"recipe {self.name!r}: split ratios {ratios} must be >= 0 and sum to 1")
        if self.clip.seconds <= 0 or self.clip.sample_rate <= 0:
            raise MipkitError(f"recipe {self.name!r}: clip.seconds and clip.sample_rate must be positive")
        if self.clip.clips_per_source < 1:
            raise MipkitError(f"recipe {self.name!r}: clip.clips_per_source must be >= 1")
        if not 0.0 <= self.clip.image_position <= 1.0:
            raise MipkitError(f"recipe {self.name!r}: clip.image_position must be in [0, 1]")
        if self.shards.sources_per_shard < 1 or self.shards.fetch_threads < 1:
            raise MipkitError(f"recipe {self.name!r}: shards.sources_per_shard and fetch_threads must be >= 1")

    def to_dict(self, redact: bool = True) -> dict[str, Any]:
        """Plain dict of the recipe; secrets (cookies file, proxy) are redacted by default."""
        data = dataclasses.asdict(self)
        if redact:
            for key in ("cookiefile", "proxy", "cookies_from_browser"):
                if data["ytdlp"].get(key):
                    data["ytdlp"][key] = "<set>"
        return data


def _section(cls, raw: dict[str, Any], where: str):
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise MipkitError(f"recipe {where}: unknown keys {unknown}; known keys: {sorted(known)}")
    return cls(**raw)


def load_recipe(name_or_path: str) -> Recipe:
    """Load ``recipes/<name>.toml`` or a TOML file path."""
    path = Path(name_or_path)
    if path.suffix != ".toml":
        path = recipe_dir() / f"{name_or_path}.toml"
    if not path.is_file():
        known = sorted(p.stem for p in recipe_dir().glob("*.toml"))
        raise MipkitError(
            f"recipe {name_or_path!r} not found; known recipes: {', '.join(known)} (or pass a .toml path)"
        )
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise MipkitError(f"recipe {path.name} is not valid TOML: {exc}") from None
    politeness = Politeness.from_raw(raw.get("politeness", {}), f"recipe {path.name}")
    recipe = Recipe(
        name=raw.get("dataset", {}).get("name", path.stem),
        dataset=raw.get("dataset", {}),
        clip=_section(ClipConfig, raw.get("clip", {}), f"{path.name} [clip]"),
        taxonomy=raw.get("taxonomy", {}).get("name", "audioset_moods"),
        splits=_section(SplitConfig, raw.get("splits", {}), f"{path.name} [splits]"),
        shards=_section(ShardConfig, raw.get("shards", {}), f"{path.name} [shards]"),
        ytdlp=_section(YtdlpConfig, raw.get("ytdlp", {}), f"{path.name} [ytdlp]"),
        politeness=politeness,
    )
    recipe.validate()
    return recipe
