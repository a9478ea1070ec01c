"""`mipkit browse`: the static site of a build opens from file:// in headless chromium, media and filters work."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mipkit.core.html import source_link
from mipkit.release.browse import build_site
from tests.helpers.browser import browser, check_page  # noqa: F401 - the fixture
from tests.helpers.synthetic import make_pair_dataset
from tests.helpers.yt8m_synthetic import make_yt8m_dataset


@pytest.fixture(scope="module")
def site(built_dataset, tmp_path_factory) -> Path:
    out, _ = built_dataset
    return build_site(out, tmp_path_factory.mktemp("site") / "site", per_page=3).parent


def test_every_page_opens_with_decoded_images_and_ready_players(site, browser, tmp_path):  # noqa: F811
    pages = sorted(site.glob("*.html"))
    assert [p.name for p in pages] == [
        "index.html",
        "test-001.html",
        "train-001.html",
        "train-002.html",
        "validation-001.html",
    ]
    players = 0
    for path in pages:
        opened = check_page(browser, path, tmp_path / f"{path.stem}.png")
        players += len(opened.facts["audio"])
        if path.name != "index.html":
            assert opened.facts["images"] and len(opened.facts["images"]) == len(opened.facts["audio"])
            assert all(a["src"].endswith(".flac") for a in opened.facts["audio"])
        opened.close()
    assert players == 6  # every pair of the build, once
    assert all((tmp_path / f"{p.stem}.png").stat().st_size > 1000 for p in pages)


def test_the_emotion_filter_changes_the_visible_cards_and_paging_keeps_it(site, browser, tmp_path):  # noqa: F811
    opened = check_page(browser, site / "train-001.html", tmp_path / "train.png")
    assert opened.visible_count() == "3 of 3 shown"
    opened.page.select_option("#filter-emotion", "sad")
    assert opened.visible_count() == "1 of 3 shown"
    assert opened.page.locator(".card:not(.hidden) .tag").all_inner_texts() == ["sad"]
    assert opened.page.get_attribute("a[data-keep-filters]", "href") == "train-002.html#emotion=sad"
    opened.page.click("a[data-keep-filters]")
    opened.page.wait_for_url("**/train-002.html#emotion=sad")
    assert opened.visible_count() == "1 of 1 shown"
    opened.close()


def test_the_index_counts_and_filters_failures_by_status(site, browser, tmp_path):  # noqa: F811
    opened = check_page(browser, site / "index.html", tmp_path / "index.png")
    assert opened.visible_count() == "6 of 6 shown"  # the six failing rows of the standard manifest
    assert [i["src"] for i in opened.facts["images"]] == ["label_distribution.png"]
    opened.page.select_option("#filter-status", "unavailable")
    assert opened.visible_count() == "1 of 6 shown"
    text = opened.page.inner_text("body")
    assert "too_short" in text and "decode_error" in text and "bad_row" in text
    opened.close()


def test_media_are_files_written_once_and_pages_hold_no_local_path(built_dataset, site):
    out, _ = built_dataset
    media = sorted((site / "media").rglob("*.*"))
    assert len(media) == 12 and {p.suffix for p in media} == {".jpg", ".flac"}
    before = {p: p.stat().st_mtime_ns for p in media}
    build_site(out, site, per_page=3)
    assert {p: p.stat().st_mtime_ns for p in media} == before
    for path in site.glob("*.html"):
        text = path.read_text()
        assert "base64" not in text and str(out.resolve().parent) not in text


def test_source_links_open_at_the_start_of_the_window():
    assert (
        source_link("https://www.youtube.com/watch?v=abcdefghijk", 75.5)
        == "https://www.youtube.com/watch?v=abcdefghijk&t=75s"
    )
    assert source_link("https://youtu.be/abcdefghijk", 3.0) == "https://www.youtube.com/watch?v=abcdefghijk&t=3s"
    assert source_link("http://user:secret@127.0.0.1:8000/a.mp4", 2.0) == "http://127.0.0.1:8000/a.mp4#t=2"


def test_audio_only_builds_show_players_without_images(tmp_path, browser):  # noqa: F811
    dd = make_pair_dataset(tmp_path / "pairs", n_train=4, n_val=1, n_test=1)
    music = tmp_path / "music"
    dd.remove_columns("image").save_to_disk(str(music))
    index = build_site(music, tmp_path / "site")
    opened = check_page(browser, index.parent / "train-001.html", tmp_path / "train.png")
    assert opened.facts["images"] == [] and len(opened.facts["audio"]) == 4
    opened.close()


def test_yt8m_builds_are_tables_of_titles_and_keywords_with_feature_sparklines(tmp_path, browser):  # noqa: F811
    make_yt8m_dataset(tmp_path / "yt8m", n_train=5, n_val=0, n_test=2)
    index = build_site(tmp_path / "yt8m", tmp_path / "site")
    opened = check_page(browser, index.parent / "train-001.html", tmp_path / "train.png")
    assert opened.visible_count() == "5 of 5 shown"
    assert opened.page.locator("tr[data-item] svg.spark polyline").count() == 10  # rgb and audio of each video
    opened.close()


def test_cli_writes_the_site_and_names_index_html(built_dataset, tmp_path):
    out, _ = built_dataset
    result = subprocess.run(
        [sys.executable, "-m", "mipkit", "browse", str(out), "--out", str(tmp_path / "s")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "index.html" in result.stdout and (tmp_path / "s" / "train-001.html").is_file()
    bad = subprocess.run(
        [sys.executable, "-m", "mipkit", "browse", str(tmp_path)], capture_output=True, text=True, timeout=300
    )
    assert bad.returncode == 2 and "no dataset_dict.json" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
