"""`mipkit eval RUN --html`: the retrieval gallery opens from file:// in headless chromium; chance levels are exact."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from baselines.eval.chance import instance_chance, label_chance
from baselines.eval.gallery import ranked, sample_queries, write_gallery
from baselines.eval.metrics import instance_metrics, label_metrics
from tests.helpers.browser import browser, check_page  # noqa: F401 - the fixture
from tests.helpers.synthetic import make_scene_dataset
from tests.helpers.yt8m_synthetic import make_yt8m_dataset


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    from baselines.train import TrainConfig, main

    root = tmp_path_factory.mktemp("gallery")
    make_scene_dataset(root / "scenes", n_train=16, n_val=4, n_test=12)
    main(
        TrainConfig(
            dataset=str(root / "scenes"),
            out=str(root / "run"),
            preset="tiny",
            epochs=5,
            batch_size=8,
            workers=0,
            quiet=True,
            tensorboard=False,
            device="cpu",
        )
    )
    return root / "run"


def test_eval_html_writes_a_gallery_with_players_images_and_the_true_match_marked(run, browser, tmp_path):  # noqa: F811
    result = subprocess.run(
        [sys.executable, "-m", "mipkit", "eval", str(run), "--html", "--workers", "0", "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr
    assert "gallery/index.html" in result.stderr and "chance" in result.stdout
    opened = check_page(browser, run / "gallery" / "index.html", tmp_path / "gallery.png")
    # 8 queries both ways: image->music shows 8 query images and 5+ players each; music->image the other way.
    assert len(opened.facts["images"]) >= 8 + 8 * 5 and len(opened.facts["audio"]) >= 8 * 5 + 8
    assert all(a["src"].endswith(".flac") for a in opened.facts["audio"])
    assert opened.page.locator(".card.truth").count() == 16  # the true match of every query, in the top 5 or after
    total = opened.visible_count()
    assert total == "16 of 16 shown"
    opened.page.select_option("#filter-found", "top1")
    assert opened.visible_count() != total
    opened.close()
    assert (tmp_path / "gallery.png").stat().st_size > 10_000


def test_the_sample_is_seeded_and_ranks_count_ties_like_the_metrics():
    assert sample_queries(50, 8, seed=0) == sample_queries(50, 8, seed=0) != sample_queries(50, 8, seed=1)
    sim = torch.tensor([[0.5, 0.9, 0.5], [0.1, 0.2, 0.3], [0.0, 0.0, 1.0]])
    top, scores, rank = ranked(sim, 0, 2)
    assert top[0] == 1 and rank == 2  # one better, one tied: the expected rank of a random tie order, rounded down
    assert [ranked(sim, q, 3)[2] for q in range(3)] == instance_metrics_ranks(sim)


def instance_metrics_ranks(sim: torch.Tensor) -> list[int]:
    from baselines.eval.metrics import instance_ranks

    return [int(r) for r in instance_ranks(sim).floor().tolist()]


def test_iiclvm_galleries_list_video_ids_and_titles(tmp_path, browser):  # noqa: F811
    dd = make_yt8m_dataset(tmp_path / "yt8m", n_train=4, n_val=0, n_test=10)
    v = torch.nn.functional.normalize(torch.randn(10, 16, generator=torch.Generator().manual_seed(0)), dim=1)
    result = {
        "run": "iiclvm",
        "n_pairs": 10,
        "v2m": {"mrr": 0.5},
        "m2v": {"mrr": 0.5},
        "chance": {"instance": instance_chance(10)},
    }
    index = write_gallery(tmp_path / "run", dd["test"], v, v + 0.01, "test", result)
    opened = check_page(browser, index, tmp_path / "iiclvm.png")
    assert opened.page.locator("tr[data-item]").count() == 16 and "v00" in opened.page.inner_text("body")
    opened.close()


def test_chance_levels_equal_the_metrics_of_random_rankings():
    generator = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 0, 0, 1, 1, 2, 2, 2, 2, -1, 3, 3])
    draws = 2000
    mean_instance, mean_label = {}, {}
    for _ in range(draws):
        sim = torch.rand(12, 12, generator=generator)
        for key, value in instance_metrics(sim).items():
            mean_instance[key] = mean_instance.get(key, 0.0) + value / draws
        for key, value in label_metrics(sim, labels, labels).items():
            mean_label[key] = mean_label.get(key, 0.0) + value / draws
    exact_instance, exact_label = instance_chance(12), label_chance(labels, labels)
    for key in ("mrr", "r@1", "r@5", "r@10", "p@1", "mean_rank"):
        assert mean_instance[key] == pytest.approx(exact_instance[key], rel=0.03), key
    for key in ("p@1", "p@5", "mrr", "map"):
        assert mean_label[key] == pytest.approx(exact_label[key], rel=0.03), key
