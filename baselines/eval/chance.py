"""What a model that ranks candidates at random scores: the level every retrieval number is read against.

Exact expectations over a uniformly random ranking of ``n`` candidates (no simulation):
* instance retrieval (one true match): ``mrr = H_n / n``, ``r@k = min(k, n) / n``, ``p@1 = 1 / n``,
  median and mean rank ``(n + 1) / 2``;
* label retrieval with ``r`` relevant candidates of ``n``, per class then macro over classes as in
  ``baselines.metrics.label_metrics``: ``p@k = min(k, n) r / (n k)``; ``mrr = sum_p P(first relevant at p) / p``;
  ``map = (H_n + (r - 1)(n - H_n) / (n - 1)) / n``.
"""

from __future__ import annotations

from math import comb

import torch


def harmonic(n: int) -> float:
    return sum(1.0 / i for i in range(1, n + 1))


def instance_chance(n: int, ks=(1, 5, 10)) -> dict[str, float]:
    if n < 1:
        return {}
    out = {"mrr": harmonic(n) / n, **{f"r@{k}": min(k, n) / n for k in ks}, "p@1": 1.0 / n}
    out["median_rank"] = out["mean_rank"] = (n + 1) / 2
    return out


def _first_relevant_rr(n: int, r: int) -> float:
    total = comb(n, r)
    return sum(comb(n - p, r - 1) / total / p for p in range(1, n - r + 2))


def _average_precision(n: int, r: int) -> float:
    h = harmonic(n)
    return (h + ((r - 1) * (n - h) / (n - 1) if n > 1 else 0.0)) / n


def label_chance(query_labels: torch.Tensor, candidate_labels: torch.Tensor, ks=(1, 5)) -> dict[str, float]:
    """Macro over the classes of the labelled queries that have a relevant candidate (as label_metrics skips)."""
    n = int(candidate_labels.numel())
    classes = sorted(int(c) for c in query_labels[query_labels >= 0].unique())
    per_class = []
    for c in classes:
        r = int((candidate_labels == c).sum())
        if r == 0:
            continue
        per_class.append(
            {
                **{f"p@{k}": min(k, n) * r / (n * k) for k in ks},
                "mrr": _first_relevant_rr(n, r),
                "map": _average_precision(n, r),
            }
        )
    if not per_class:
        return {}
    return {key: sum(entry[key] for entry in per_class) / len(per_class) for key in per_class[0]}
