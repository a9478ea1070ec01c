"""Recipes are data: a TOML file in ``recipes/`` says how a dataset is built.

``load_recipe`` reads one into typed sections; CLI flags override single values with
``Recipe.with_overrides({"clip.clips_per_source": 3})``.

The sections below are the one schema of every recipe (mipnet, audioset-mood, yt8m-*): each key is
one line with its type, bounds and meaning, checked when the recipe is read and again on every
override, so a bad value is a one-line error before any work. To add a key, add a field to its
section class (``name: Type = Field(default, <bounds>, description=...)``); to add a section, add a
class and list it in ``RecipeFile`` (a nested TOML table is a nested section class). Unknown keys
and tables are errors, never ignored.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass as std_dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    ConfigDict,
    Field,
    StrictBool,
    StrictFloat,
    StrictInt,
    StrictStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.dataclasses import dataclass

from mipkit.config.politeness import Politeness
from mipkit.core.errors import MipkitError
from mipkit.core.paths import recipe_dir

# Scalars are strict (TOML has types: "ten" is not a number, true is not 1); nan/inf are never a setting.
_SCHEMA = ConfigDict(extra="forbid", allow_inf_nan=False)
SECRET_KEYS = frozenset({"cookiefile", "proxy", "cookies_from_browser"})  # never printed, logged or published
PROXY_SCHEMES = ("http", "https", "socks4", "socks4a", "socks5", "socks5h")
_CONTROL = re.compile(r"[\x00-\x20\x7f]")


def _url_problem(text: str, schemes: tuple[str, ...]) -> str | None:
    """Why ``text`` is not a URL with one of ``schemes`` and a host, else None (the text is never echoed)."""
    if _CONTROL.search(text):
        return "has a space or control character"
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError:
        return "is not a URL"
    if parts.scheme.lower() not in schemes:
        return f"needs a scheme of {', '.join(schemes)}"
    if not parts.hostname:
        return "has no host"
    return None


@dataclass(frozen=True, config=_SCHEMA)
class ClipConfig:
    seconds: StrictFloat = Field(10.0, gt=0, le=600, description="length of every music clip, s")
    sample_rate: StrictInt = Field(32000, ge=8000, le=192000, description="audio sample rate, Hz (PaSST: 32000)")
    channels: StrictInt = Field(1, ge=1, le=8, description="audio channels (1 = mono)")
    audio_format: Literal["flac"] = Field("flac", description="clip encoding; only lossless FLAC is implemented")
    image: StrictBool = Field(True, description="keep one image per clip")
    image_position: StrictFloat = Field(
        0.5, ge=0, le=1, description="where in the window the image is taken (0 start, 1 end)"
    )
    image_format: Literal["jpeg"] = Field("jpeg", description="image encoding; only JPEG is implemented")
    image_quality: StrictInt = Field(90, ge=1, le=100, description="JPEG quality")
    image_max_side: StrictInt = Field(
        512, ge=0, le=16384, description="longer image side is scaled down to this; 0 keeps it"
    )
    clips_per_source: StrictInt = Field(1, ge=1, le=1000, description="evenly spaced windows for a row without start_s")
    max_short_fraction: StrictFloat = Field(0.01, ge=0, lt=1, description="shortfall of a decoded clip that is padded")


@dataclass(frozen=True, config=_SCHEMA)
class SplitConfig:
    train: StrictFloat = Field(0.8, ge=0, le=1, description="share of sources in train")
    validation: StrictFloat = Field(0.1, ge=0, le=1, description="share of sources in validation")
    test: StrictFloat = Field(0.1, ge=0, le=1, description="share of sources in test")
    seed: StrictInt = Field(0, ge=0, description="seed of the split assignment")
    stratify_by: Literal["", "emotion"] = Field(
        "", description='"" = by source only; "emotion" = ratios hold per label'
    )

    @model_validator(mode="after")
    def _ratios_sum_to_one(self):
        if abs(sum(self.ratios().values()) - 1.0) > 1e-6:
            raise ValueError(f"split ratios {self.ratios()} must be >= 0 and sum to 1")
        return self

    def ratios(self) -> dict[str, float]:
        return {"train": self.train, "validation": self.validation, "test": self.test}


@dataclass(frozen=True, config=_SCHEMA)
class ShardConfig:
    sources_per_shard: StrictInt = Field(
        32, ge=1, le=100_000, description="sources per shard: the unit of work and resume"
    )
    fetch_threads: StrictInt = Field(
        0, ge=0, le=64, description="sources fetched concurrently inside a shard (0 = twice the cores)"
    )


@dataclass(frozen=True, config=_SCHEMA)
class YtdlpConfig:
    format: StrictStr = Field(
        "bv*[height<=480]+ba/b[height<=480]/bv*+ba/b", min_length=1, description="yt-dlp format selector"
    )
    retries: StrictInt = Field(3, ge=0, le=100, description="yt-dlp's own HTTP retries")
    extract_retries: StrictInt = Field(2, ge=0, le=20, description="our retries of transient failures")
    retry_backoff_s: StrictFloat = Field(5.0, ge=0, le=3600, description="first back-off between our retries, s")
    sleep_interval: StrictFloat = Field(0.0, ge=0, le=3600, description="pause before each download, s")
    socket_timeout: StrictFloat = Field(30.0, gt=0, le=3600, description="timeout of every network read, s")
    force_keyframes_at_cuts: StrictBool = Field(
        False, description="yt-dlp sections re-encoded at the cuts, instead of one exact-seek ffmpeg per window"
    )
    cookiefile: StrictStr = Field("", description="Netscape cookies file (secret)")
    proxy: StrictStr = Field("", description="proxy URL, e.g. socks5://host:1080 (secret)")
    cookies_from_browser: StrictStr = Field(
        "", description="BROWSER[:PROFILE], yt-dlp's --cookies-from-browser (secret)"
    )

    @field_validator("proxy")
    @classmethod
    def _proxy_is_a_url(cls, value: str) -> str:
        problem = value and _url_problem(value, PROXY_SCHEMES)
        if problem:
            raise ValueError(f"the proxy {problem}; pass scheme://[user:password@]host:port")
        return value


@dataclass(frozen=True, config=_SCHEMA)
class FetchConfig:
    """Bounds of every transfer: yt-dlp's, the media relay's and ffmpeg's."""

    socket_timeout_s: StrictFloat = Field(30.0, gt=0, le=3600, description="any network read waiting longer fails, s")
    window_timeout_s: StrictFloat = Field(
        120.0, gt=0, le=86_400, description="wall-clock cap of one window's ffmpeg, s"
    )
    max_retry_after_s: StrictFloat = Field(
        300.0, ge=0, le=86_400, description="a Retry-After is honoured up to this, s"
    )
    strategy: Literal["sections", "streams", "auto"] = Field(
        "auto",
        description="how windows are read: sections (ranged reads), streams (smallest streams whole), "
        "auto (sections, falling back to streams per host)",
    )
    min_section_kib_s: StrictFloat = Field(
        64.0, gt=0, le=10_000_000, description="auto: a ranged read slower than this falls back to streams, KiB/s"
    )


@dataclass(frozen=True, config=_SCHEMA)
class PolitenessTable:
    """One ``[politeness.HOST]`` table (or ``[politeness.default]``); a key left out keeps the host's default.

    The values in force, and ``--politeness HOST:key=value``, are ``mipkit.config.politeness``'s."""

    min_interval_s: StrictFloat | None = Field(
        None, ge=0, le=86_400, description="pause between the starts of two sources on the host, s"
    )
    jitter_s: StrictFloat | None = Field(None, ge=0, le=86_400, description="plus a random pause of up to this, s")
    max_per_hour: StrictInt | None = Field(
        None, ge=0, le=1_000_000, description="source starts per rolling hour (0 = no cap)"
    )
    sleep_requests_s: StrictFloat | None = Field(None, ge=0, le=3600, description="yt-dlp's sleep_interval_requests, s")
    backoff_initial_s: StrictFloat | None = Field(
        None, ge=0, le=86_400, description="pause after a rate limit without Retry-After (doubles in a row), s"
    )
    backoff_max_s: StrictFloat | None = Field(
        None, ge=0, le=86_400, description="cap of that pause and of Retry-After, s"
    )
    breaker_after: StrictInt | None = Field(
        None, ge=1, le=10_000, description="rate limits in a row after which no source starts on the host"
    )

    def given(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass(frozen=True, config=_SCHEMA)
class Yt8mConfig:
    """The ``[yt8m]`` section of the yt8m-title / yt8m-keyword recipes."""

    music_label: StrictStr = Field("Music video", min_length=1, description="looked up by name in --vocabulary")
    music_kg_id: StrictStr = Field("/m/0mdxd", description="... or by Knowledge Graph id")
    music_label_index: StrictInt = Field(
        14, ge=0, le=100_000, description="index used without --vocabulary (2018 vocabulary)"
    )
    lookup_base: StrictStr = Field(
        "http://data.yt8m.org/2/j/i", description="{base}/{id[:2]}/{id}.js resolves a pseudo id"
    )
    lookup_rate: StrictFloat = Field(
        10.0, ge=0, le=10_000, description="id lookups per second, whole build (0 = no limit)"
    )
    lookup_retries: StrictInt = Field(3, ge=0, le=20, description="retries of one id lookup")
    lookup_timeout: StrictFloat = Field(15.0, gt=0, le=600, description="timeout of one id lookup, s")
    metadata_rate: StrictFloat = Field(
        1.0, ge=0, le=1000, description="yt-dlp extract_info calls per second (0 = no limit)"
    )
    video_url_template: StrictStr = Field(
        "https://www.youtube.com/watch?v={youtube_id}", description="URL yt-dlp reads"
    )
    split_by: Literal["partition", "ratio"] = Field(
        "partition", description="train*/validate* files, or [splits] by video"
    )
    validate_as: Literal["test", "validation"] = Field("test", description="split of the validate* files")
    threads: StrictInt = Field(4, ge=1, le=64, description="videos resolved concurrently inside a shard")

    @field_validator("lookup_base")
    @classmethod
    def _lookup_base_is_a_url(cls, value: str) -> str:
        problem = _url_problem(value, ("http", "https"))
        if problem:
            raise ValueError(f"the lookup base {problem}")
        return value

    @field_validator("video_url_template")
    @classmethod
    def _template_names_the_video(cls, value: str) -> str:
        if "{youtube_id}" not in value:
            raise ValueError("must contain {youtube_id}")
        return value


@dataclass(frozen=True, config=_SCHEMA)
class DatasetInfo:
    name: StrictStr = Field("", description="dataset name (default: the recipe file's name)")
    pretty_name: StrictStr = Field("", description="title of the dataset card")
    paper: StrictStr = Field("", description="the paper the dataset follows")
    license: StrictStr = Field("other", description="Hub licence id of the release")


@dataclass(frozen=True, config=_SCHEMA)
class TaxonomyRef:
    name: StrictStr = Field("audioset_moods", min_length=1, description="recipes/taxonomies/<name>.toml")


@dataclass(frozen=True, config=_SCHEMA)
class RecipeFile:
    """A recipe TOML as written: one field per table."""

    dataset: DatasetInfo = dataclasses.field(default_factory=DatasetInfo)
    clip: ClipConfig = dataclasses.field(default_factory=ClipConfig)
    taxonomy: TaxonomyRef = dataclasses.field(default_factory=TaxonomyRef)
    splits: SplitConfig = dataclasses.field(default_factory=SplitConfig)
    shards: ShardConfig = dataclasses.field(default_factory=ShardConfig)
    ytdlp: YtdlpConfig = dataclasses.field(default_factory=YtdlpConfig)
    fetch: FetchConfig = dataclasses.field(default_factory=FetchConfig)
    yt8m: Yt8mConfig | None = None
    # [politeness.default], [politeness."youtube.com"], ...: host names are the keys of one table each.
    politeness: dict[StrictStr, PolitenessTable] = dataclasses.field(default_factory=dict)


def _keys_of(cls) -> list[str]:
    return [f.name for f in dataclasses.fields(cls)]


def schema_error(exc: ValidationError, where: str) -> MipkitError:
    """One line for a schema failure of a recipe file: which table and key, why, and the value (never a secret's)."""
    errors = exc.errors()
    first = errors[0]
    loc = tuple(str(p) for p in first["loc"])
    table, key = loc[:-1], loc[-1] if loc else ""
    if first["type"] == "unexpected_keyword_argument":
        if not table:
            return MipkitError(
                f"recipe {where}: unknown table [{key}]; known tables: {', '.join(_keys_of(RecipeFile))}"
            )
        unknown = [
            str(e["loc"][-1]) for e in errors if e["type"] == first["type"] and tuple(map(str, e["loc"][:-1])) == table
        ]
        known = sorted(_keys_of(_section_class(table)))
        return MipkitError(f"recipe {where} [{'.'.join(table)}]: unknown keys {unknown}; known keys: {known}")
    if not table and first["type"] in ("dataclass_type", "dataclass_args_type"):  # e.g. `clip = 3`
        return MipkitError(f"recipe {where}: [{key}] must be a table of keys")
    secret = bool(set(loc) & SECRET_KEYS) or isinstance(first.get("input"), dict)
    shown = "" if secret or "input" not in first else f" (got {first['input']!r:.60})"
    name = f"[{'.'.join(table)}] {key}" if table else f"[{key}]"
    return MipkitError(f"recipe {where} {name}: {first['msg'].removeprefix('Value error, ')}{shown}")


def _section_class(path: tuple[str, ...]):
    cls = RecipeFile
    for name in path:
        if name not in cls.__pydantic_fields__:
            continue  # a key of a dict of tables ([politeness."youtube.com"]): the table's class is already cls
        annotation = cls.__pydantic_fields__[name].annotation
        cls = next((a for a in getattr(annotation, "__args__", ()) if dataclasses.is_dataclass(a)), annotation)
    return cls


@std_dataclass(frozen=True)
class Recipe:
    name: str
    dataset: dict[str, Any] = dataclasses.field(default_factory=dict)
    clip: ClipConfig = dataclasses.field(default_factory=ClipConfig)
    taxonomy: str = "audioset_moods"
    splits: SplitConfig = dataclasses.field(default_factory=SplitConfig)
    shards: ShardConfig = dataclasses.field(default_factory=ShardConfig)
    ytdlp: YtdlpConfig = dataclasses.field(default_factory=YtdlpConfig)
    fetch: FetchConfig = dataclasses.field(default_factory=FetchConfig)
    yt8m: Yt8mConfig | None = None  # only the yt8m recipes have it
    politeness: Politeness = dataclasses.field(default_factory=Politeness)

    @property
    def socket_timeout_s(self) -> float:
        """The read timeout in force: the tighter of ``fetch.socket_timeout_s`` and ``ytdlp.socket_timeout``."""
        return min(self.fetch.socket_timeout_s, self.ytdlp.socket_timeout)

    def with_overrides(self, overrides: dict[str, Any]) -> Recipe:
        """Return a copy with ``section.key`` values replaced (``None`` values are ignored), validated by the schema."""
        recipe = self
        by_section: dict[str, dict[str, Any]] = {}
        for dotted, value in overrides.items():
            if value is None:
                continue
            section, _, key = dotted.partition(".")
            if not key:
                recipe = dataclasses.replace(recipe, **{section: value})
                continue
            by_section.setdefault(section, {})[key] = value
        # One section at a time, all its keys at once: split ratios are checked together, not one by one.
        for section, values in by_section.items():
            try:
                recipe = dataclasses.replace(
                    recipe, **{section: dataclasses.replace(getattr(recipe, section), **values)}
                )
            except ValidationError as exc:
                raise _override_error(exc, self.name, section, values) from None
        return recipe

    def to_dict(self, redact: bool = True) -> dict[str, Any]:
        """Plain dict of the recipe; secrets (cookies file, proxy) are redacted by default."""
        data = dataclasses.asdict(self)
        if data.get("yt8m") is None:
            data.pop("yt8m", None)
        if redact:
            for key in SECRET_KEYS:
                if data["ytdlp"].get(key):
                    data["ytdlp"][key] = "<set>"
        return data


def _override_error(exc: ValidationError, name: str, section: str, values: dict[str, Any]) -> MipkitError:
    first = exc.errors()[0]
    key = str(first["loc"][0]) if first["loc"] else next(iter(values))  # a whole-section check has no key
    shown = "" if key in SECRET_KEYS or key not in values else f" (got {values[key]!r:.60})"
    return MipkitError(
        f"recipe {name!r}: {section}.{key}: {first['msg'].removeprefix('Value error, ')}{shown}; "
        "fix the command-line flag or the recipe"
    )


def check_cookies_file(path: str | Path, where: str = "--cookies") -> None:
    """A one-line error unless ``path`` is a Netscape cookies file (the format yt-dlp reads); values never echoed."""
    path = Path(path)
    hint = (
        "export cookies in Netscape format (e.g. a 'cookies.txt' browser extension, or yt-dlp --cookies-from-browser)"
    )
    if not path.is_file():
        raise MipkitError(f"{where} file {path.name!r} does not exist; {hint} and pass that file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise MipkitError(f"{where} file {path.name!r} is not a Netscape cookies file (not text); {hint}") from None
    except OSError as exc:
        raise MipkitError(f"{where} file {path.name!r} cannot be read ({exc.strerror}); {hint}") from None
    if text.lstrip().startswith(("{", "[")):
        raise MipkitError(
            f"{where} file {path.name!r} holds JSON, not the Netscape cookies format yt-dlp reads; {hint}"
        )
    cookies = 0
    for number, line in enumerate(text.splitlines(), 1):
        if line.startswith("#HttpOnly_"):
            line = line.removeprefix("#HttpOnly_")
        elif line.startswith("#") or not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 7 or not re.fullmatch(r"\d*", fields[4].strip()):
            raise MipkitError(
                f"{where} file {path.name!r} line {number} is not a Netscape cookie "
                f"(7 tab-separated fields: domain, flag, path, secure, expiry, name, value); {hint}"
            )
        cookies += 1
    if not cookies:
        raise MipkitError(f"{where} file {path.name!r} has no cookies in Netscape format; {hint}")


def load_recipe(name_or_path: str) -> Recipe:
    """Load ``recipes/<name>.toml`` or a TOML file path, validated by the schema above."""
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
    except UnicodeDecodeError:
        raise MipkitError(f"recipe {path.name} is not UTF-8 text; re-save it as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise MipkitError(f"recipe {path.name} is not valid TOML: {exc}") from None
    try:
        parsed = RecipeFile(**raw)
    except ValidationError as exc:
        raise schema_error(exc, path.name) from None
    if parsed.ytdlp.cookiefile:
        check_cookies_file(parsed.ytdlp.cookiefile, where=f"recipe {path.name} [ytdlp] cookiefile:")
    dataset = dict(raw.get("dataset", {}))
    politeness = Politeness.from_raw({h: t.given() for h, t in parsed.politeness.items()}, f"recipe {path.name}")
    return Recipe(
        name=parsed.dataset.name or path.stem,
        dataset=dataset,
        clip=parsed.clip,
        taxonomy=parsed.taxonomy.name,
        splits=parsed.splits,
        shards=parsed.shards,
        ytdlp=parsed.ytdlp,
        fetch=parsed.fetch,
        yt8m=parsed.yt8m,
        politeness=politeness,
    )
