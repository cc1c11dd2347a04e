"""The HTML report in a real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium).

Opens the file:// page offline and checks: it loads, the table is there, every gallery thumbnail
decoded (naturalWidth > 0, all inline data: URIs, nothing fetched from a network), and the
worst-samples / runs-disagree filters change the number of visible gallery items as expected.
Chromium, chromedriver and selenium are requirements of the suite (scripts/test.sh installs them): when
one is missing these tests fail, naming it; they never skip.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from headless_chromium import chromium_driver
from make_runs import cli, make_standard_results

# synthetic records are derived from real `evalkit run` records of this session (tests/make_runs.py)
pytestmark = pytest.mark.usefixtures("real_runs")


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    with chromium_driver(tmp_path_factory.mktemp("chromium-profile")) as driver:
        yield driver


@pytest.fixture(scope="module")
def page(tmp_path_factory, real_runs) -> Path:
    root = tmp_path_factory.mktemp("browser-report")
    make_standard_results(root)
    path = root / "report.html"
    code, _, err = cli(["report", root / "results", "--html", path, "--no-write", "--gallery-size", "30"])
    assert code == 0, err
    return path


def _visible_items(driver) -> int:
    return driver.execute_script(
        "return Array.from(document.querySelectorAll('.item')).filter(e => e.offsetParent !== null).length")


def _choose(driver, mode: str) -> None:
    from selenium.webdriver.common.by import By

    driver.find_element(By.CSS_SELECTOR, f'input[name="mode"][value="{mode}"]').click()


def test_page_loads_offline_with_table_and_images(browser, page):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(page.as_uri())
    WebDriverWait(browser, 30).until(lambda d: d.execute_script("return document.readyState") == "complete")
    assert "evalkit report" in browser.title
    table = browser.find_element(By.ID, "leaderboard")
    assert table.is_displayed()
    body_rows = table.find_elements(By.CSS_SELECTOR, "tbody tr")
    assert len(body_rows) == 3
    assert "63.10" in table.text and "+1.90" in table.text
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.chart")) >= 2
    # every thumbnail decoded from its inline data: URI
    WebDriverWait(browser, 30).until(
        lambda d: d.execute_script("return Array.from(document.images).every(i => i.complete)"))
    images = browser.execute_script(
        "return Array.from(document.querySelectorAll('img.thumb')).map(i => [i.src.slice(0, 5), i.naturalWidth])")
    assert len(images) > 20
    assert all(src == "data:" and width > 0 for src, width in images), images[:5]
    fetched = browser.execute_script(
        "return performance.getEntriesByType('resource').map(e => e.name).filter(n => !n.startsWith('data:'))")
    assert fetched == []


def test_worst_and_disagree_filters(browser, page):
    from selenium.webdriver.common.by import By

    browser.get(page.as_uri())
    total = len(browser.find_elements(By.CSS_SELECTOR, ".item"))
    assert _visible_items(browser) == total > 0
    assert browser.find_element(By.ID, "visible-count").text == str(total)

    _choose(browser, "worst")  # default k = 10: the 10 worst of each run (runs have >= 10 samples)
    assert _visible_items(browser) == 7 * 10
    k = browser.find_element(By.ID, "worst-k")
    k.clear()
    k.send_keys("2")
    assert _visible_items(browser) == 7 * 2
    assert browser.find_element(By.ID, "visible-count").text == "14"
    worst = browser.execute_script(
        "return Array.from(document.querySelectorAll('.item')).filter(e => e.offsetParent !== null)"
        ".map(e => parseInt(e.dataset.worst, 10))")
    assert sorted(set(worst)) == [0, 1]

    _choose(browser, "disagree")
    # coco-caption: the two runs differ on all 12 images (12 x 2); vqav2: 3 runs, 4 questions on which
    # they do not all agree (4 x 3); retrieval-coco: 4 images ranked differently (4 x 2)
    assert _visible_items(browser) == 24 + 12 + 8
    shown = browser.execute_script(
        "return Array.from(document.querySelectorAll('.item')).filter(e => e.offsetParent !== null)"
        ".map(e => e.querySelectorAll('.other').length)")
    assert all(n >= 1 for n in shown)

    _choose(browser, "all")
    assert _visible_items(browser) == total
