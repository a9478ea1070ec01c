"""Unit tests for baselines.eval.metrics against torchmetrics' per-query retrieval functions."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchmetrics.functional.retrieval as tmf  # the non-deprecated import path

from baselines.eval.metrics import (
    INSTANCE_KEYS,
    instance_metrics,
    instance_ranks,
    label_metrics,
    pooled_instance_metrics,
    retrieval_report,
)


def _scores(n_queries: int, n_candidates: int, seed: int = 0) -> torch.Tensor:
    # Continuous random scores (tie-free with probability 1), strictly positive because
    # torchmetrics' reciprocal rank treats candidates scored <= 0 as never retrieved.
    g = torch.Generator().manual_seed(seed)
    return 0.1 + torch.rand(n_queries, n_candidates, generator=g, dtype=torch.float64)


def _torchmetrics_instance(sim: torch.Tensor) -> dict[str, float]:
    values = {key: [] for key in ("mrr", "r@1", "r@5", "r@10", "p@1")}
    for i in range(sim.shape[0]):  # loop over queries: fine in a test
        target = torch.zeros(sim.shape[1], dtype=torch.bool)
        target[i] = True
        values["mrr"].append(tmf.retrieval_reciprocal_rank(sim[i], target))
        for k in (1, 5, 10):
            values[f"r@{k}"].append(tmf.retrieval_hit_rate(sim[i], target, top_k=k))
            assert tmf.retrieval_recall(sim[i], target, top_k=k) == values[f"r@{k}"][-1]  # one relevant item
        values["p@1"].append(tmf.retrieval_precision(sim[i], target, top_k=1))
    return {key: float(torch.stack(v).double().mean()) for key, v in values.items()}


@pytest.mark.parametrize("shape", [(40, 40), (25, 60)])
def test_instance_metrics_match_torchmetrics(shape):
    sim = _scores(*shape, seed=1)
    sim[range(shape[0]), range(shape[0])] += 0.5  # a weak "model": spreads the ranks out
    got = instance_metrics(sim)
    assert tuple(got) == INSTANCE_KEYS
    assert all(isinstance(value, float) for value in got.values())
    for key, value in _torchmetrics_instance(sim).items():
        assert got[key] == pytest.approx(value, abs=1e-6), key  # torchmetrics returns fp32
    ranks = np.array([1 + int((sim[i] > sim[i, i]).sum()) for i in range(shape[0])])
    assert got["median_rank"] == pytest.approx(float(np.median(ranks)))
    assert got["mean_rank"] == pytest.approx(float(ranks.mean()))
    assert 0 < got["r@1"] < got["r@10"] < 1  # the random case is not degenerate


def test_instance_metrics_chunking_and_numpy_invariance():
    sim = _scores(37, 50, seed=2)
    reference = instance_metrics(sim, chunk_size=1024)
    assert instance_metrics(sim, chunk_size=3) == reference
    assert instance_metrics(sim.numpy(), chunk_size=5) == reference
    assert instance_metrics(sim.float(), chunk_size=7)["mrr"] == pytest.approx(reference["mrr"], rel=1e-6)


def test_instance_perfect_and_reversed_rankings():
    n = 30
    perfect = _scores(n, n, seed=3) + 100 * torch.eye(n, dtype=torch.float64)
    got = instance_metrics(perfect)
    assert got == {"mrr": 1.0, "r@1": 1.0, "r@5": 1.0, "r@10": 1.0, "p@1": 1.0, "median_rank": 1.0, "mean_rank": 1.0}
    reversed_ = _scores(n, n, seed=3) - 100 * torch.eye(n, dtype=torch.float64)
    got = instance_metrics(reversed_)
    assert got["mrr"] == pytest.approx(1 / n)
    assert got["r@10"] == 0.0 and got["median_rank"] == n and got["mean_rank"] == n


def test_instance_tie_rules():
    flat = torch.zeros(6, 6)  # a collapsed model: every score tied
    assert instance_ranks(flat, ties="optimistic").tolist() == [1] * 6
    assert instance_ranks(flat, ties="pessimistic").tolist() == [6] * 6
    assert instance_ranks(flat).tolist() == [3.5] * 6  # the default never rewards a collapse
    assert instance_metrics(flat, ties="pessimistic")["r@5"] == 0.0
    collapsed = instance_metrics(torch.zeros(100, 100))
    assert collapsed["r@1"] == 0.0 and collapsed["median_rank"] == 50.5


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_scores_are_an_error_not_a_perfect_score(bad):
    sim = torch.rand(5, 5)
    sim[2, 3] = bad
    with pytest.raises(ValueError, match="not finite"):
        instance_metrics(sim)
    with pytest.raises(ValueError, match="not finite"):
        label_metrics(sim, torch.arange(5) % 2, torch.arange(5) % 2)


def test_instance_metrics_rejects_fewer_candidates_than_queries():
    with pytest.raises(ValueError):
        instance_metrics(torch.zeros(5, 4))


# ---------------------------------------------------------------- label metrics
def _torchmetrics_label(sim, query_labels, candidate_labels, ks=(1, 5)):
    per_class: dict[int, dict[str, list[float]]] = {}
    for i in range(sim.shape[0]):
        target = candidate_labels == query_labels[i]
        if query_labels[i] < 0 or not target.any():
            continue
        row = per_class.setdefault(int(query_labels[i]), {key: [] for key in [f"p@{k}" for k in ks] + ["mrr", "map"]})
        for k in ks:
            row[f"p@{k}"].append(float(tmf.retrieval_precision(sim[i], target, top_k=k)))
        row["mrr"].append(float(tmf.retrieval_reciprocal_rank(sim[i], target)))
        row["map"].append(float(tmf.retrieval_average_precision(sim[i], target)))
    keys = next(iter(per_class.values())).keys()
    return {key: float(np.mean([np.mean(row[key]) for row in per_class.values()])) for key in keys}


def _labelled_case(seed: int = 4):
    g = torch.Generator().manual_seed(seed)
    sim = 0.1 + torch.rand(45, 60, generator=g, dtype=torch.float64)  # > 0: see _scores
    query_labels = torch.randint(0, 4, (45,), generator=g)
    candidate_labels = torch.randint(0, 4, (60,), generator=g)
    query_labels[[2, 11, 30]] = -1  # unlabelled queries
    query_labels[[5, 6]] = 9  # no relevant candidate
    candidate_labels[[0, 7, 19]] = -1  # unlabelled candidates: never relevant
    return sim, query_labels, candidate_labels


def test_label_metrics_match_torchmetrics_class_macro_average():
    sim, query_labels, candidate_labels = _labelled_case()
    got = label_metrics(sim, query_labels, candidate_labels, ks=(1, 5))
    expected = _torchmetrics_label(sim, query_labels, candidate_labels)
    assert set(got) == {"p@1", "p@5", "mrr", "map"}
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, abs=1e-6), key  # torchmetrics works in fp32


def test_label_metrics_chunking_invariance():
    sim, query_labels, candidate_labels = _labelled_case(5)
    assert label_metrics(sim, query_labels, candidate_labels, chunk_size=3) == label_metrics(
        sim, query_labels, candidate_labels, chunk_size=1024
    )


def test_label_metrics_skip_unlabelled_and_unmatched_queries():
    sim, query_labels, candidate_labels = _labelled_case(6)
    counted = (query_labels >= 0) & (query_labels != 9)
    subset = label_metrics(sim[counted], query_labels[counted], candidate_labels)
    assert label_metrics(sim, query_labels, candidate_labels) == pytest.approx(subset, abs=1e-15)
    none = label_metrics(sim, torch.full((45,), -1), candidate_labels)
    assert all(np.isnan(value) for value in none.values())


def test_label_metrics_perfect_ranking():
    labels = torch.arange(40) % 4
    sim = (labels[:, None] == labels[None, :]).double() + 0.01 * _scores(40, 40, seed=7)
    got = label_metrics(sim, labels, labels)
    assert got == {"p@1": 1.0, "p@5": 1.0, "mrr": 1.0, "map": 1.0}


# ---------------------------------------------------------------- label metrics under ties
def _index_order_label_metrics(sim, query_labels, candidate_labels, ks=(1, 5)):
    """Plain per-query P@k / RR / AP with ties broken by candidate index (python loops), class-macro."""
    per_class: dict[int, dict[str, list[float]]] = {}
    rows, candidate_labels = sim.tolist(), candidate_labels.tolist()
    for i, q in enumerate(query_labels.tolist()):
        ranked = sorted(range(len(candidate_labels)), key=lambda j: (-rows[i][j], j))
        rel = [candidate_labels[j] == q for j in ranked]
        if q < 0 or not any(rel):
            continue
        row = per_class.setdefault(q, {key: [] for key in [f"p@{k}" for k in ks] + ["mrr", "map"]})
        for k in ks:
            row[f"p@{k}"].append(sum(rel[:k]) / k)
        row["mrr"].append(1.0 / (rel.index(True) + 1))
        row["map"].append(sum(sum(rel[: p + 1]) / (p + 1) for p in range(len(rel)) if rel[p]) / sum(rel))
    return {
        key: float(np.mean([np.mean(row[key]) for row in per_class.values()])) for key in next(iter(per_class.values()))
    }


def _brute_force_tie_expectation(sim, query_labels, candidate_labels, ks=(1, 5)):
    """The index-order metrics averaged over every permutation of the candidates (= every tie order)."""
    import itertools

    totals: dict[str, float] = {}
    perms = list(itertools.permutations(range(sim.shape[1])))
    for perm in perms:
        perm = torch.tensor(perm)
        got = _index_order_label_metrics(sim[:, perm], query_labels, candidate_labels[perm], ks)
        for key, value in got.items():
            totals[key] = totals.get(key, 0.0) + value
    return {key: value / len(perms) for key, value in totals.items()}


@pytest.mark.parametrize("seed", range(6))
def test_label_metrics_equal_the_brute_force_average_over_all_tie_orders(seed):
    g = torch.Generator().manual_seed(seed)
    n_queries, n_candidates = 5, 5 + seed % 2  # 120 or 720 orders
    sim = torch.randint(0, 3, (n_queries, n_candidates), generator=g).double() / 2  # heavy ties
    query_labels = torch.randint(0, 3, (n_queries,), generator=g)
    candidate_labels = torch.randint(0, 3, (n_candidates,), generator=g)
    candidate_labels[0] = -1  # never relevant
    query_labels[0] = candidate_labels[1]  # at least one query counts
    got = label_metrics(sim, query_labels, candidate_labels, ks=(1, 3, 5))
    expected = _brute_force_tie_expectation(sim, query_labels, candidate_labels, ks=(1, 3, 5))
    assert got == pytest.approx(expected, abs=1e-12)
    tied_whole_rows = torch.zeros(n_queries, n_candidates, dtype=torch.float64)
    assert label_metrics(tied_whole_rows, query_labels, candidate_labels, ks=(1, 3, 5)) == pytest.approx(
        _brute_force_tie_expectation(tied_whole_rows, query_labels, candidate_labels, ks=(1, 3, 5)), abs=1e-12
    )


def test_a_collapsed_model_scores_chance_whatever_the_candidate_order():
    """All scores equal, 4 balanced classes: index tie-breaking gave MRR 0.268 or 0.508 depending only
    on whether the candidates were sorted by class; the expectation is the same for both orders."""
    sorted_labels, interleaved = torch.arange(40) // 10, torch.arange(40) % 4
    sim = torch.zeros(40, 40)
    a = label_metrics(sim, sorted_labels, sorted_labels)
    b = label_metrics(sim, interleaved, interleaved)
    assert a == pytest.approx(b, abs=1e-12)
    assert a["p@1"] == pytest.approx(0.25) and a["p@5"] == pytest.approx(0.25)
    n, r = 40, 10  # E[1/X], X = position of the first of r relevant among n shuffled items
    from math import comb

    assert a["mrr"] == pytest.approx(sum(comb(n - x, r - 1) / comb(n, r) / x for x in range(1, n - r + 2)))
    # E[AP] of a random order = (H_n + (r - 1) / (n - 1) * (n - H_n)) / n: 0.313 here, -> r / n only as n grows
    harmonic = sum(1 / i for i in range(1, n + 1))
    assert a["map"] == pytest.approx((harmonic + (r - 1) / (n - 1) * (n - harmonic)) / n)
    assert _index_order_label_metrics(sim, sorted_labels, sorted_labels)["mrr"] != pytest.approx(a["mrr"], abs=0.05)


def test_label_metrics_without_ties_are_the_plain_values():
    sim, query_labels, candidate_labels = _labelled_case(9)
    assert label_metrics(sim, query_labels, candidate_labels) == pytest.approx(
        _index_order_label_metrics(sim, query_labels, candidate_labels), abs=1e-12
    )


# ---------------------------------------------------------------- report and pooled protocol
def test_retrieval_report_both_directions():
    g = torch.Generator().manual_seed(8)
    images, music = torch.randn(20, 8, generator=g), torch.randn(20, 8, generator=g)
    labels = torch.randint(0, 3, (20,), generator=g)
    report = retrieval_report(images, music, labels, labels)
    sim = torch.nn.functional.normalize(images, dim=1) @ torch.nn.functional.normalize(music, dim=1).T
    assert set(report) == {"i2m", "m2i"}
    assert {k: report["m2i"][k] for k in INSTANCE_KEYS} == pytest.approx(instance_metrics(sim.T))
    assert report["i2m"]["mrr"] == pytest.approx(instance_metrics(sim)["mrr"])
    assert report["i2m"]["label_map"] == pytest.approx(label_metrics(sim, labels, labels)["map"])
    assert "label_map" not in retrieval_report(images, music)["i2m"]


def test_pooled_protocol_shapes_determinism_and_subsets():
    sim = _scores(50, 50, seed=9)
    result = pooled_instance_metrics(sim, n_candidates=20, seeds=(0, 1, 2))
    assert set(result) == {
        "mean",
        "std",
        "n_candidates",
        "requested_n_candidates",
        "used_all_pairs",
        "seeds",
        "per_seed",
    }
    assert result["n_candidates"] == 20 and not result["used_all_pairs"] and result["seeds"] == [0, 1, 2]
    assert len(result["per_seed"]) == 3 and set(result["mean"]) == set(INSTANCE_KEYS)
    assert pooled_instance_metrics(sim, 20, seeds=(0, 1, 2)) == result  # deterministic by seed
    assert result["per_seed"][0] != result["per_seed"][1]  # different subsets
    idx = torch.randperm(50, generator=torch.Generator().manual_seed(1))[:20]
    assert result["per_seed"][1] == instance_metrics(sim[idx][:, idx])
    mrrs = np.array([run["mrr"] for run in result["per_seed"]])
    assert result["mean"]["mrr"] == pytest.approx(mrrs.mean())
    assert result["std"]["mrr"] == pytest.approx(mrrs.std(ddof=1))


def test_pooled_protocol_with_fewer_pairs_uses_all():
    sim = _scores(12, 12, seed=10)
    result = pooled_instance_metrics(sim, n_candidates=1000, seeds=(0, 1))
    assert result["used_all_pairs"] and result["n_candidates"] == 12 and result["requested_n_candidates"] == 1000
    assert result["mean"] == pytest.approx(instance_metrics(sim))
    assert all(value == 0.0 for value in result["std"].values())
