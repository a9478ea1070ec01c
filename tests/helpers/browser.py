"""Open static pages in headless Debian chromium (Playwright driving the system browser) and check them."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"

MEDIA_READY = "Array.from(document.querySelectorAll('audio')).every(a => a.readyState >= 1 || a.error)"
PAGE_FACTS = """() => ({
  images: Array.from(document.querySelectorAll('img')).map(i => ({src: i.getAttribute('src'), width: i.naturalWidth})),
  audio: Array.from(document.querySelectorAll('audio')).map(a => ({src: a.getAttribute('src'), ready: a.readyState,
                                                                  error: a.error ? a.error.code : null})),
  count: (document.getElementById('visible-count') || {}).textContent || '',
})"""


@pytest.fixture(scope="module")
def browser():
    playwright = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).is_file():
        pytest.skip("Debian's chromium is not installed (scripts/setup.sh installs it)")
    with playwright.sync_playwright() as p:
        instance = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield instance
        instance.close()


class OpenedPage:
    """One page opened from file://: its console errors and the state of its images and players."""

    def __init__(self, browser, path: Path, screenshot: Path):
        self.page = browser.new_page()
        self.errors: list[str] = []
        self.page.on("console", lambda message: self.errors.append(message.text) if message.type == "error" else None)
        self.page.on("pageerror", lambda error: self.errors.append(str(error)))
        self.page.goto(path.resolve().as_uri())
        self.page.wait_for_function(MEDIA_READY, timeout=30_000)
        self.facts = self.page.evaluate(PAGE_FACTS)
        self.page.screenshot(path=str(screenshot), full_page=True)

    def visible_count(self) -> str:
        return self.page.evaluate("document.getElementById('visible-count').textContent")

    def close(self) -> None:
        self.page.close()


def check_page(browser, path: Path, screenshot: Path) -> OpenedPage:
    """Open ``path``; assert no console errors, every image decoded and every player has its FLAC's metadata."""
    opened = OpenedPage(browser, path, screenshot)
    assert opened.errors == [], f"{path.name}: console errors {opened.errors}"
    bad_images = [i["src"] for i in opened.facts["images"] if i["width"] <= 0]
    assert not bad_images, f"{path.name}: images not decoded: {bad_images}"
    bad_audio = [a for a in opened.facts["audio"] if a["ready"] < 1]
    assert not bad_audio, f"{path.name}: players without metadata: {bad_audio}"
    return opened
