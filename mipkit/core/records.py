"""The small records that travel between pipeline stages."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from mipkit.core.ids import pair_id_for

# Final status of every requested sample. ``ok`` plus the failure kinds users filter on.
SPLITS = ("train", "validation", "test")  # the splits of every dataset mipkit builds

OK = "ok"
BAD_ROW = "bad_row"
DUPLICATE = "duplicate"
UNAVAILABLE = "unavailable"  # permanent: removed, private, 404, age-gated
RATE_LIMITED = "rate_limited"  # transient: 429, bot check; worth a later retry
NETWORK_ERROR = "network_error"  # transient: timeouts, refused connections
DOWNLOAD_ERROR = "download_error"  # anything else yt-dlp could not fetch
DECODE_ERROR = "decode_error"  # media fetched but not decodable (corrupt, no stream)
TOO_SHORT = "too_short"  # source or window shorter than the clip
INTERNAL_ERROR = "internal_error"  # a bug in mipkit: the sample is recorded, the build goes on
PENDING = "pending"  # not a failure: never fetched, the host blocked the session; a rerun fetches it
TRANSIENT_STATUSES = frozenset({RATE_LIMITED, NETWORK_ERROR})


@dataclass
class Window:
    """One requested clip window of a source (``start_s`` None = choose evenly spaced windows)."""

    row: int
    start_s: float | None
    emotion: str | None = None
    title: str | None = None
    license: str | None = None
    emotion_source: str | None = None  # where ``emotion`` came from; None = "manifest"
    emotion_score: float | None = None  # a model's confidence, kept when a release is rebuilt


@dataclass
class SourceRequest:
    """Every window asked of one source: the unit of one ``extract_info``."""

    source_id: str
    url: str
    windows: list[Window] = field(default_factory=list)
    spellings: list[str] = field(default_factory=list)  # how the input wrote ``url``; several = merged into one source


@dataclass
class SampleStatus:
    """Outcome of one requested sample (a window, or a manifest row that never became one)."""

    status: str
    error: str = ""
    pair_id: str | None = None
    source_id: str | None = None
    url: str | None = None
    start_s: float | None = None
    row: int | None = None
    fetch_strategy: str = ""  # how the window was read: "sections" or "streams" ("" if never fetched)

    @classmethod
    def of_window(
        cls, status: str, error: str, source_id: str, url: str, start_s: float | None, row: int | None
    ) -> SampleStatus:
        """The status of one window of a source; its pair id follows from source and start (none without a start)."""
        pair_id = None if start_s is None else pair_id_for(source_id, start_s)
        return cls(status, error, pair_id, source_id, url, start_s, row)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Pair:
    """A built sample: media bytes plus provenance, one future dataset row."""

    pair_id: str
    source_id: str
    source_url: str
    start_s: float
    end_s: float
    audio_flac: bytes
    image_jpeg: bytes | None
    emotion: str | None
    emotion_source: str | None
    emotion_score: float | None
    title: str
    uploader: str
    license: str
    fetch_strategy: str = ""  # "sections" or "streams": how its window was read
