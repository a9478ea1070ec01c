"""YouTube-8M music-video subsets with titles or keywords (II-CLVM / II-CLVTM, docs/methods.md).

``mipkit build yt8m-title`` / ``yt8m-keyword`` read frame-level TFRecords (``tfrecords``), keep the
"Music video" class, resolve each pseudo id to its YouTube id (``lookup``), get title and tags with
yt-dlp or from a metadata file (``metadata``) and write a sharded, resumable build (``build``) in the
layout ``mipkit status`` reads.

Statuses of a music video (``ok`` plus the ``mipkit.core.records`` network statuses ``rate_limited``,
``network_error``, ``unavailable``, ``download_error``) are listed here. Videos whose labels lack
"Music video" are not requests of the build: they are counted per shard (``stats.json``:
``skipped.not_music``) and in the build summary, never written one by one (the full release has
~5 million of them).
"""

from __future__ import annotations

NOT_MUSIC = "not_music"  # skip: labels without "Music video" (counted, not listed)
BAD_RECORD = "bad_record"  # a SequenceExample without id, frames, or with wrong feature sizes
NO_LOOKUP = "no_lookup"  # the id lookup answered an error document or 404: dead/private video
PRIVATE = "private"  # yt-dlp: "Private video"
NO_METADATA = "no_metadata"  # --no-fetch and the video is not in --metadata
NO_TITLE = "no_title"  # yt8m-title: empty title
NO_KEYWORDS = "no_keywords"  # yt8m-keyword: no tags

KINDS = ("title", "keyword")
