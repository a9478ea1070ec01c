"""Split assignment by source: two clips of one video never land in different splits."""

from __future__ import annotations

import hashlib
from collections import defaultdict

from mipkit.core.records import SPLITS


def _counts(n: int, ratios: dict[str, float]) -> dict[str, int]:
    """Largest-remainder counts; every split with a positive ratio gets one item when n allows."""
    raw = {k: n * r for k, r in ratios.items()}
    counts = {k: int(v) for k, v in raw.items()}
    for k in sorted(raw, key=lambda k: raw[k] - counts[k], reverse=True)[: n - sum(counts.values())]:
        counts[k] += 1
    wanted = [k for k, r in ratios.items() if r > 0]
    if n >= len(wanted):
        for k in wanted:
            if counts[k] == 0:
                donor = max(counts, key=counts.get)
                counts[donor] -= 1
                counts[k] += 1
    return counts


def _order_key(source_id: str, seed: int) -> str:
    # A keyed hash gives a seeded shuffle that does not depend on the order sources were read in.
    return hashlib.sha256(f"{seed}:{source_id}".encode()).hexdigest()


def plan_splits(
    sources, ratios: dict[str, float], seed: int, stratify_by: str = "", fixed: dict[str, str] | None = None
) -> dict[str, str]:
    """Splits of every *requested* source, planned before anything is fetched.

    Planning over the whole request (fixed by the build's fingerprint) keeps each source's split
    stable across resumes and ``--retry-failed``: whether another source builds or fails moves
    nothing. ``fixed`` (source id -> split) pins sources whose split is given, e.g. by a release.
    ``sources`` are ``SourceRequest``s; with ``stratify_by="emotion"`` a source's stratum is its most
    common requested label.
    """
    fixed = {sid: split for sid, split in (fixed or {}).items() if split in SPLITS}
    free = [s for s in sources if s.source_id not in fixed]
    strata = None
    if stratify_by == "emotion":
        strata = {}
        for source in free:
            labels = [w.emotion for w in source.windows]
            strata[source.source_id] = str(max(set(labels), key=lambda label: (labels.count(label), str(label))))
    return {**assign_splits([s.source_id for s in free], ratios, seed, strata), **fixed}


def assign_splits(
    source_ids, ratios: dict[str, float], seed: int, strata: dict[str, str] | None = None
) -> dict[str, str]:
    """Map each source id to a split; with ``strata`` (source -> group) the ratios hold per group."""
    groups: dict[str, list[str]] = defaultdict(list)
    for sid in sorted(set(source_ids)):
        groups[(strata or {}).get(sid, "")].append(sid)
    assignment: dict[str, str] = {}
    for members in groups.values():
        members.sort(key=lambda s: _order_key(s, seed))
        position = 0
        for split, count in _counts(len(members), ratios).items():
            for sid in members[position : position + count]:
                assignment[sid] = split
            position += count
    return assignment
