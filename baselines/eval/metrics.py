"""Retrieval metrics of the mipkit baselines (public, stable API).

Convention: ``sim[i, j]`` is the score of candidate j for query i (higher = better). All
functions accept torch tensors (CPU or CUDA) or numpy arrays, work on blocks of
``chunk_size`` query rows at a time (memory O(chunk_size * n_candidates), no Python loop over
single queries) and return python floats.

* ``instance_metrics``: the true match of query i is candidate i (the only relevant item).
* ``label_metrics``: relevant = same (emotion) label; per-query values are averaged within each
  query class, then macro-averaged over classes (EMO-CLIM protocol). Tied scores: the expected value
  under a uniformly random order of the tied candidates (tie-aware P@k, RR and AP).
* ``retrieval_report``: both directions from paired embeddings.
* ``pooled_instance_metrics``: the papers' protocol (random 1000-candidate test sets, several seeds).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

INSTANCE_KEYS: tuple[str, ...] = ("mrr", "r@1", "r@5", "r@10", "p@1", "median_rank", "mean_rank")
TIE_RULES: tuple[str, ...] = ("optimistic", "pessimistic", "mean")


def _as_tensor(x: Any) -> Tensor:
    return x if isinstance(x, Tensor) else torch.as_tensor(np.asarray(x))


def _check_chunk(chunk_size: int) -> None:
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")


def _check_finite(sim: Tensor) -> None:
    if sim.is_floating_point() and not bool(torch.isfinite(sim).all()):
        raise ValueError("scores contain NaN or inf: the embeddings are not finite (did training diverge?)")


def instance_ranks(sim: Any, chunk_size: int = 1024, ties: str = "mean") -> Tensor:
    """1-based rank of the true match (candidate i) for every query i.

    ``rank_i = 1 + #{j : sim[i, j] > sim[i, i]}`` plus a share of the candidates tied with the true
    match *(choice, documented)*: ``mean`` (default) adds half of them (the expected rank under a
    random tie order, as a float), ``pessimistic`` all of them, ``optimistic`` none. On tie-free
    scores all three equal torchmetrics' ranks. The default is ``mean`` because ``optimistic``
    gives a collapsed model (every score equal) a perfect rank 1. Note torchmetrics >= 1.9 treats
    candidates scored <= 0 as never retrieved (reciprocal rank 0), which we do not: cosine scores
    are often negative. Non-finite scores raise ``ValueError``.
    """
    if ties not in TIE_RULES:
        raise ValueError(f"ties must be one of {TIE_RULES}, got {ties!r}")
    _check_chunk(chunk_size)
    sim = _as_tensor(sim)
    _check_finite(sim)
    if sim.ndim != 2 or sim.shape[1] < sim.shape[0]:
        raise ValueError(
            f"sim must be [n_queries, n_candidates] with n_candidates >= n_queries, got {tuple(sim.shape)}"
        )
    ranks = []
    for start in range(0, sim.shape[0], chunk_size):
        block = sim[start : start + chunk_size]
        rows = torch.arange(block.shape[0], device=block.device)
        true_score = block[rows, rows + start][:, None]
        higher = (block > true_score).sum(dim=1)
        if ties == "optimistic":
            ranks.append(1 + higher)
            continue
        tied_others = (block == true_score).sum(dim=1) - 1  # the true match ties with itself
        ranks.append(1 + higher + tied_others if ties == "pessimistic" else 1 + higher + tied_others / 2)
    return torch.cat(ranks) if ranks else torch.zeros(0, dtype=torch.long, device=sim.device)


def _median(values: Tensor) -> float:
    """Conventional median (mean of the two middle values for an even count); no size limit."""
    ordered = values.sort().values
    middle = ordered.numel() // 2
    if ordered.numel() % 2:
        return float(ordered[middle])
    return float((ordered[middle - 1] + ordered[middle]) / 2)


def instance_metrics(sim: Any, chunk_size: int = 1024, ties: str = "mean") -> dict[str, float]:
    """Instance-level retrieval metrics; the true match of query i is candidate i.

    From the ranks of ``instance_ranks``: ``mrr = mean(1/rank)``, ``r@k = mean(rank <= k)``,
    ``p@1 = r@1`` (one relevant item), ``median_rank`` (average of the two middle ranks for an
    even count) and ``mean_rank``. ``sim`` may have more candidates than queries (distractors).
    """
    ranks = instance_ranks(sim, chunk_size=chunk_size, ties=ties).double()
    if ranks.numel() == 0:
        raise ValueError("sim has no queries")
    recall = {f"r@{k}": float((ranks <= k).double().mean()) for k in (1, 5, 10)}
    return {
        "mrr": float((1.0 / ranks).mean()),
        **recall,
        "p@1": recall["r@1"],
        "median_rank": _median(ranks),
        "mean_rank": float(ranks.mean()),
    }


def _log_binomial(n: Tensor, k: Tensor) -> Tensor:
    return torch.lgamma(n + 1) - torch.lgamma(k + 1) - torch.lgamma(n - k + 1)


def _tie_aware_label_rows(scores: Tensor, relevant: Tensor, ks: Sequence[int]) -> dict[str, Tensor]:
    """Per-query expected P@k, RR and AP under a uniformly random order of tied candidates.

    ``scores`` [B, N] sorted descending, ``relevant`` [B, N] float64 in the same order, every row with at
    least one relevant item. Tied candidates form contiguous groups; a position i of group g (start s_g,
    size n_g, r_g relevant, R_g relevant in earlier groups) is relevant with probability ``rho = r_g / n_g``.
    """
    n_rows, n_cands = scores.shape
    device = scores.device
    new_group = torch.ones_like(scores, dtype=torch.bool)
    new_group[:, 1:] = scores[:, 1:] != scores[:, :-1]
    group = new_group.long().cumsum(dim=1) - 1  # groups are numbered 0.. in score order
    size_g = torch.zeros(n_rows, n_cands, dtype=torch.float64, device=device).scatter_add_(
        1, group, torch.ones_like(relevant)
    )
    hits_g = torch.zeros_like(size_g).scatter_add_(1, group, relevant)
    start_g, before_g = size_g.cumsum(dim=1) - size_g, hits_g.cumsum(dim=1) - hits_g  # exclusive sums
    size, hits, start, before = (t.gather(1, group) for t in (size_g, hits_g, start_g, before_g))
    rho = hits / size
    position = torch.arange(1, n_cands + 1, device=device, dtype=torch.float64).expand(n_rows, -1)
    out = {f"p@{k}": rho[:, : min(k, n_cands)].sum(dim=1) / k for k in ks}
    # AP = 1/R sum_i rel_i * hits_in_top_i / i; given i relevant, each other slot of its group before i is
    # relevant with probability (r - 1) / (n - 1) (McSherry & Najork 2008, tie-aware AP).
    expected_hits = before + 1 + (position - start - 1) * (hits - 1) / (size - 1).clamp(min=1)
    out["map"] = (rho * expected_hits / position).sum(dim=1) / relevant.sum(dim=1)
    # RR: the first relevant item lies in the first group with a relevant member, at offset x = i - s of
    # that group with probability C(n - x, r - 1) / C(n, r) (the x - 1 slots before it are irrelevant).
    first_group = (hits_g > 0).long().argmax(dim=1, keepdim=True)  # argmax returns the first maximum
    offset = position - start
    possible = (group == first_group) & (size - offset >= hits - 1)
    log_p = _log_binomial(size - offset, (hits - 1).clamp(min=0)) - _log_binomial(size, hits)
    out["mrr"] = torch.where(possible, log_p.exp() / position, torch.zeros_like(position)).sum(dim=1)
    return out


def label_metrics(
    sim: Any, query_labels: Any, candidate_labels: Any, ks: Sequence[int] = (1, 5), chunk_size: int = 1024
) -> dict[str, float]:
    """Label-aligned (emotion) retrieval, class-macro-averaged (EMO-CLIM protocol).

    Relevant: ``candidate_labels[j] == query_labels[i]``. Per query, over the candidates sorted by
    descending score: ``p@k = #relevant in top k / k``; ``rr = 1 / position of the first relevant``;
    ``ap = mean over relevant positions p of (#relevant in top p / p)``.

    Ties: each metric is its **expected value under a uniformly random order of tied candidates**
    (exactly equal scores), so neither the candidate order nor a collapsed model can change it (all
    scores equal: ``p@k`` = the class share). A position in a tie group of size n with r relevant items is
    relevant with probability r/n (``p@k``: the sum of these over the top k, divided by k); the first
    relevant item sits at offset x of the first group holding one with probability C(n-x, r-1) / C(n, r)
    (``rr``: the expectation of 1/position); ``ap`` is the tie-aware average precision of McSherry &
    Najork (ECIR 2008). On tie-free scores these are the plain values (``tests`` prove both against
    torchmetrics and a brute-force average over all permutations).

    Each metric is averaged over the queries of a class, then over classes. Queries labelled -1
    (unlabelled) or without any relevant candidate are skipped; candidates labelled -1 are never
    relevant. Returns keys ``p@k`` for k in ``ks``, ``mrr`` and ``map`` (nan if no query counts).
    """
    _check_chunk(chunk_size)
    sim = _as_tensor(sim)
    _check_finite(sim)
    device = sim.device
    query_labels = _as_tensor(query_labels).to(device=device, dtype=torch.long).reshape(-1)
    candidate_labels = _as_tensor(candidate_labels).to(device=device, dtype=torch.long).reshape(-1)
    if sim.ndim != 2 or sim.shape != (query_labels.numel(), candidate_labels.numel()):
        raise ValueError(
            f"sim {tuple(sim.shape)} does not match {query_labels.numel()} query and "
            f"{candidate_labels.numel()} candidate labels"
        )
    names = [f"p@{k}" for k in ks] + ["mrr", "map"]
    per_query: dict[str, list[Tensor]] = {name: [] for name in names}
    kept_labels: list[Tensor] = []
    for start in range(0, sim.shape[0], chunk_size):
        block_labels = query_labels[start : start + chunk_size]
        scores, order = torch.sort(sim[start : start + chunk_size], dim=1, descending=True, stable=True)
        relevant = candidate_labels[order] == block_labels[:, None]
        keep = (block_labels >= 0) & (relevant.sum(dim=1) > 0)
        kept_labels.append(block_labels[keep])
        rows = _tie_aware_label_rows(scores[keep], relevant[keep].double(), ks)
        for name in names:
            per_query[name].append(rows[name])
    labels = torch.cat(kept_labels)
    if labels.numel() == 0:
        return {name: float("nan") for name in names}
    classes, class_index = torch.unique(labels, return_inverse=True)
    class_sizes = torch.bincount(class_index, minlength=classes.numel()).double()
    result = {}
    for name in names:
        values = torch.cat(per_query[name])
        class_sums = torch.zeros(classes.numel(), dtype=torch.float64, device=device).index_add_(0, class_index, values)
        result[name] = float((class_sums / class_sizes).mean())
    return result


def retrieval_report(
    query_emb: Any,
    cand_emb: Any,
    query_labels: Optional[Any] = None,
    cand_labels: Optional[Any] = None,
    normalize: bool = True,
    chunk_size: int = 1024,
    ks: Sequence[int] = (1, 5),
) -> dict[str, dict[str, float]]:
    """Both retrieval directions for paired embeddings (row i of each is a true pair).

    ``sim = query_emb @ cand_emb.T`` in fp32 (cosine if ``normalize``); ``i2m`` ranks rows of
    ``sim`` (image/video -> music), ``m2i`` ranks rows of ``sim.T``. Instance metrics use the keys
    of ``instance_metrics``; with labels, ``label_metrics`` are added with a ``label_`` prefix
    (e.g. ``label_map``). Memory: the full N x N score matrix.
    """
    query_emb, cand_emb = _as_tensor(query_emb).float(), _as_tensor(cand_emb).float()
    if query_emb.shape[0] != cand_emb.shape[0]:
        raise ValueError("query_emb and cand_emb must be paired row-wise (same number of rows)")
    if normalize:
        query_emb, cand_emb = F.normalize(query_emb, dim=-1), F.normalize(cand_emb, dim=-1)
    sim = query_emb @ cand_emb.to(query_emb.device).T
    report = {}
    directions = {"i2m": (sim, query_labels, cand_labels), "m2i": (sim.T, cand_labels, query_labels)}
    for name, (scores, q_labels, c_labels) in directions.items():
        report[name] = instance_metrics(scores, chunk_size=chunk_size)
        if q_labels is not None and c_labels is not None:
            label = label_metrics(scores, q_labels, c_labels, ks=ks, chunk_size=chunk_size)
            report[name].update({f"label_{key}": value for key, value in label.items()})
    return report


def pooled_instance_metrics(
    sim: Any, n_candidates: int = 1000, seeds: Sequence[int] = (0, 1, 2), chunk_size: int = 1024
) -> dict[str, Any]:
    """The papers' protocol: per seed, a random test subset of ``n_candidates`` pairs.

    For each seed, ``idx = randperm(N)[:n_candidates]`` (torch CPU generator seeded with the seed,
    so results are reproducible across devices); ``instance_metrics(sim[idx][:, idx])``. Returns
    ``mean`` and ``std`` (sample std, ddof=1; 0 for one seed) per metric, the ``n_candidates``
    actually used, ``requested_n_candidates``, ``used_all_pairs`` (True when N <= the request:
    then every seed uses all N pairs and says so), ``seeds`` and ``per_seed``.
    """
    sim = _as_tensor(sim)
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(f"sim must be square (paired queries and candidates), got {tuple(sim.shape)}")
    if n_candidates < 1 or len(seeds) == 0:
        raise ValueError("need n_candidates >= 1 and at least one seed")
    n_pairs = sim.shape[0]
    used = min(n_candidates, n_pairs)
    per_seed = []
    for seed in seeds:
        generator = torch.Generator().manual_seed(int(seed))
        idx = torch.randperm(n_pairs, generator=generator)[:used].to(sim.device)
        per_seed.append(instance_metrics(sim[idx][:, idx], chunk_size=chunk_size))
    values = {key: torch.tensor([run[key] for run in per_seed], dtype=torch.float64) for key in INSTANCE_KEYS}
    return {
        "mean": {key: float(v.mean()) for key, v in values.items()},
        "std": {key: float(v.std(unbiased=True)) if v.numel() > 1 else 0.0 for key, v in values.items()},
        "n_candidates": used,
        "requested_n_candidates": int(n_candidates),
        "used_all_pairs": n_pairs <= n_candidates,
        "seeds": [int(s) for s in seeds],
        "per_seed": per_seed,
    }
