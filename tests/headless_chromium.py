"""Debian's Chromium and chromedriver driven by Selenium, offline, for the browser tests (the HTML report, and
`evalkit serve`). They are requirements of the suite (scripts/test.sh installs them): a missing one fails the
test that needs it, naming it; nothing skips."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator, Sequence

CHROMIUM = os.environ.get("EVALKIT_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("EVALKIT_CHROMEDRIVER", "/usr/bin/chromedriver")
# no name resolves (nothing outside this machine is reached); callers serving on 127.0.0.1 exclude it
OFFLINE_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", "--host-resolver-rules=MAP * ~NOTFOUND", "--window-size=1400,1000")


def missing() -> str | None:
    """What is not installed, as one line naming how to install it, or None."""
    if not Path(CHROMIUM).exists():
        return f"{CHROMIUM} not installed (apt-get install -y chromium chromium-driver)"
    if not Path(CHROMEDRIVER).exists():
        return f"{CHROMEDRIVER} not installed (apt-get install -y chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium not installed (pip install selenium)"
    return None


@contextlib.contextmanager
def chromium_driver(profile: Path, flags: Sequence[str] = OFFLINE_FLAGS) -> Iterator:
    """A headless Chromium WebDriver with its own profile folder (removed afterwards)."""
    reason = missing()
    assert reason is None, reason  # scripts/test.sh installs chromium, chromium-driver and selenium
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never download a driver or a browser
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in flags:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)
