"""Snakemake's HTML report, opened in headless Chromium (the system's package) through Playwright: what a
reader sees of each research question's page and each figure.

Also a script, for the README's screenshot of a study's report:
    .venv/bin/python -m tests.browser results/report.html docs/report.png
"""

from __future__ import annotations

import shutil
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")


def chromium() -> str | None:
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


@dataclass
class Rendered:
    """One report entry as the browser drew it."""

    label: str
    heading: str  # a page's <h1>, empty for a figure
    tables: int
    images: list[tuple[int, int]]  # natural width and height of every image that loaded


@contextmanager
def opened_report(report: Path, width: int = 1400, height: int = 900):
    """A page for the report in headless Chromium; script errors on the page are collected in
    ``page.errors``."""
    from playwright.sync_api import sync_playwright

    executable = chromium()
    if executable is None:
        raise FileNotFoundError(f"no Chromium found (looked for {', '.join(CHROMIUM_NAMES)})")
    with sync_playwright() as playwright:
        # Chromium's own sandbox needs user namespaces a container may not give; the page is our own report.
        browser = playwright.chromium.launch(
            executable_path=executable, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.errors = []
            page.on("pageerror", lambda error: page.errors.append(str(error)))
            page.report_uri = Path(report).resolve().as_uri()
            yield page
        finally:
            browser.close()


def landing(page) -> str:
    """The text of the report's first page: the workflow's description."""
    page.goto(page.report_uri)
    page.get_by_text("How to read a claim", exact=False).first.wait_for()
    return page.locator("body").inner_text()


def labels(page, category: str) -> list[str]:
    """The first label of every result the report lists under a category."""
    page.goto(page.report_uri)
    page.get_by_text(category, exact=True).click()
    return [label.strip() for label in page.locator("tbody tr td:first-child").all_inner_texts()]


def show(page, category: str, label: str) -> None:
    """Open a result from the report's start, as a reader clicks through its menu."""
    page.goto(page.report_uri)
    page.get_by_text(category, exact=True).click()
    page.locator("tr", has_text=label).locator("a[iconname=eye]").click()


LOADED_IMAGES = """images => images
    .filter(image => image.complete && image.naturalWidth > 0)
    .map(image => [image.naturalWidth, image.naturalHeight])"""


def render(page, category: str, label: str) -> Rendered:
    show(page, category, label)
    if page.locator("iframe").count():  # an HTML result
        frame = page.frame_locator("iframe")
        frame.locator("body img").last.wait_for()
        heading = frame.locator("h1").first.inner_text()
        return Rendered(
            label, heading, frame.locator("table").count(), frame.locator("img").evaluate_all(LOADED_IMAGES)
        )
    shown = page.locator("img[src^='data:image/png']")
    shown.first.wait_for()
    return Rendered(label, "", 0, shown.evaluate_all(LOADED_IMAGES))


def screenshot(report: Path, out: Path, category: str = "Research questions", label: str = "RQ1") -> None:
    with opened_report(report) as page:
        render(page, category, label)
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out))


if __name__ == "__main__":
    screenshot(Path(sys.argv[1]), Path(sys.argv[2]))
