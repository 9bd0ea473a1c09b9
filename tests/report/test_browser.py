"""The reports in Debian's headless Chromium (Playwright driving the system browser, no download).

What a person does with a report: it opens from disk with no console error, the viewer draws the brain,
clicking a lesion row moves the viewer there, tables sort, and ids holding markup are shown, never run.
A screenshot of each page is saved (``GDFREE_SCREENSHOTS``: a folder to keep them in; default the test's
temporary folder).
"""

from __future__ import annotations

import io
import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gdfree.io.bids import CaseFiles, derivative_path
from gdfree.report import case_slug, write_reports
from gdfree.report.case import write_case_report
from gdfree.report.cohort import write_cohort_report
from gdfree.report.render import copy_assets
from tests.report.conftest import ARGS

pytestmark = pytest.mark.browser

EVIL_SUBJECT = "<script>window.pwned=1</script>"


@pytest.fixture(scope="module")
def browser(chromium: str) -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("GDFREE_BROWSER_TESTS") == "required":
            pytest.fail("GDFREE_BROWSER_TESTS=required but playwright is not installed (pip install -e '.[test]')")
        pytest.skip("playwright is not installed")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=ARGS)
        yield b
        b.close()


class Opened:
    """A page opened from disk, with every console error and uncaught exception it raised."""

    def __init__(self, browser: Any, path: Path) -> None:
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.errors: list[str] = []
        self.page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)
        self.page.on("pageerror", lambda e: self.errors.append(f"uncaught: {e}"))
        self.page.goto(path.resolve().as_uri())

    def wait_for_viewer(self) -> str:
        self.page.wait_for_selector("body[data-viewer]", state="attached", timeout=120_000)
        return self.page.evaluate("document.body.dataset.viewer")

    def screenshot(self, name: str, tmp_path: Path) -> Path:
        folder = Path(os.environ.get("GDFREE_SCREENSHOTS", tmp_path))
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / name
        self.page.screenshot(path=str(path), full_page=True)
        return path


def _canvas_pixels(opened: Opened) -> np.ndarray:
    from PIL import Image

    png = opened.page.locator("#gl").screenshot()
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


def test_case_page_viewer_and_lesion_rows(browser: Any, predicted: dict[str, Path], tmp_path: Path) -> None:
    result = write_reports(tmp_path / "report", evaluation=predicted["evaluation"], case_ids=["sub-002"])
    opened = Opened(browser, result.cases["sub-002"])
    assert opened.wait_for_viewer() == "ready", opened.page.inner_text("#location")
    pixels = _canvas_pixels(opened)
    lit = (pixels.max(axis=2) > 40).mean()
    assert lit > 0.05, f"the viewer drew {lit:.1%} non-black pixels"  # the brain in three planes
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 50  # an image, not a flat fill
    rows = opened.page.locator("#visible-table tbody tr")
    assert rows.count() >= 2
    positions = []
    for i in (0, rows.count() - 1):
        before = opened.page.evaluate("Array.from(window.gdfreeNiivue.scene.crosshairPos)")
        rows.nth(i).click()
        after = opened.page.evaluate("Array.from(window.gdfreeNiivue.scene.crosshairPos)")
        positions.append((before, after, opened.page.inner_text("#location")))
        cells = rows.nth(i).locator("td")
        want = [float(cells.nth(k).get_attribute("data-value")) for k in (5, 6, 7)]  # the centroid in mm
        shown = [float(v) for v in re.findall(r"[xyz] (-?[0-9.]+) mm", opened.page.inner_text("#location"))]
        assert np.allclose(shown, want, atol=0.6), (shown, want)  # the crosshair is at the lesion's centroid
    assert positions[0][1] != positions[1][1] and positions[1][0] != positions[1][1]
    assert "selected" in (rows.nth(rows.count() - 1).get_attribute("class") or "")
    opened.screenshot("case-sub-002.png", tmp_path)
    assert opened.errors == []


def test_tables_sort_by_a_clicked_column(browser: Any, predicted: dict[str, Path], tmp_path: Path) -> None:
    result = write_reports(tmp_path / "report", evaluation=predicted["evaluation"], case_ids=["sub-002"], viewer=False)
    opened = Opened(browser, result.cases["sub-002"])
    header = opened.page.locator("#visible-table th[data-key=p_active]")
    values = (
        "Array.from(document.querySelectorAll('#visible-table tbody tr td:nth-child(3)')).map(c => +c.dataset.value)"
    )
    header.click()
    ascending = opened.page.evaluate(values)
    header.click()
    descending = opened.page.evaluate(values)
    assert ascending == sorted(ascending) and descending == sorted(ascending, reverse=True) and len(ascending) >= 2
    assert opened.errors == []


def _evil_case(predicted: dict[str, Path], root: Path) -> CaseFiles:
    """sub-001 again under a subject id holding a script element (files copied to where its id puts them)."""
    from gdfree.io.adapters import discover

    source = next(c for c in discover(predicted["cohort"]) if c.case_id == "sub-001")
    anat = predicted["predictions"] / "sub-001" / "anat"
    for path in anat.iterdir():
        kind = path.name[len("sub-001_") :]
        suffix, ext = kind.rsplit("_", 1)[-1].split(".", 1)[0], "." + kind.split(".", 1)[1]
        desc = kind.split("desc-")[1].split("_")[0] if "desc-" in kind else None
        if desc is None:
            continue
        target = derivative_path(root, EVIL_SUBJECT, None, suffix, ext, desc=desc)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, target)
    shutil.copyfile(anat / "sub-001_lesions.tsv", derivative_path(root, EVIL_SUBJECT, None, "lesions", ".tsv"))
    return CaseFiles(subject=EVIL_SUBJECT, images=dict(source.images), masks=dict(source.masks))


def test_markup_in_ids_is_shown_not_run(browser: Any, predicted: dict[str, Path], tmp_path: Path) -> None:
    files = _evil_case(predicted, tmp_path / "predictions")
    report = tmp_path / "report"
    copy_assets(report, viewer=True)
    slug = case_slug(files.case_id)
    page = write_case_report(tmp_path / "predictions", files, report, slug=slug, cohort_link="index.html",
                             row={"case_id": files.case_id, "activity_score": 0.5})  # fmt: skip
    rows = [{"case_id": files.case_id, "activity_score": 0.5}]
    index = write_cohort_report(report, predictions=rows, case_pages={files.case_id: page.name},
                                failures={EVIL_SUBJECT: EVIL_SUBJECT})  # fmt: skip
    for path in (page, index):
        opened = Opened(browser, path)
        if path == page:
            assert opened.wait_for_viewer() == "ready"
        assert opened.page.evaluate("window.pwned") is None, f"{path.name}: the id's script ran"
        text = opened.page.inner_text("body")
        assert f"sub-{EVIL_SUBJECT}" in text, f"{path.name}: the id is not shown as text"
        assert opened.page.locator("script:not([src])").count() == 0
        opened.screenshot(f"escaped-{path.stem[:20]}.png", tmp_path)
        assert opened.errors == []
    link = Opened(browser, index).page.locator("a.case-link")
    assert link.get_attribute("href") == f"{slug}.html"


def test_cohort_page_opens_cleanly(browser: Any, predicted: dict[str, Path], tmp_path: Path) -> None:
    result = write_reports(tmp_path / "report", evaluation=predicted["evaluation"], case_ids=["sub-001"])
    opened = Opened(browser, result.index)
    images = opened.page.locator("img")
    assert images.count() >= 3
    for i in range(images.count()):  # every picture loaded
        assert opened.page.evaluate("(img) => img.complete && img.naturalWidth > 0", images.nth(i).element_handle())
    shot = opened.screenshot("cohort.png", tmp_path)
    assert shot.stat().st_size > 10_000
    opened.page.locator("a.case-link").first.click()
    opened.page.wait_for_url("**/sub-001.html")
    assert opened.wait_for_viewer() == "ready"
    assert opened.errors == []


def test_an_injected_inline_script_is_refused(browser: Any, predicted: dict[str, Path], tmp_path: Path) -> None:
    """Defence in depth: were escaping ever to fail, the pages' Content-Security-Policy refuses inline script."""
    result = write_reports(tmp_path / "report", evaluation=predicted["evaluation"], case_ids=["sub-001"], viewer=False)
    for page in (result.index, result.cases["sub-001"]):
        opened = Opened(browser, page)
        opened.page.evaluate("() => { const s = document.createElement('script'); s.textContent = 'window.ran = 1';"
                             " document.body.appendChild(s); }")  # fmt: skip
        assert opened.page.evaluate("() => window.ran") is None
        assert any("Content Security Policy" in e for e in opened.errors), opened.errors
