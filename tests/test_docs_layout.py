"""The built docs in a real headless Chromium, 1280 px wide (a laptop): the pages a
newcomer reads first fit the window. No table makes the page scroll sideways, and no
quoted message or code hides its end in a block that scrolls."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from selenium.webdriver.chrome.webdriver import WebDriver

from .test_dashboard import browser  # noqa: F401  (the fixture: Debian's headless Chromium, 1280 px wide)

ROOT = Path(__file__).resolve().parent.parent
WIDTH = 1280
#: The page's width, and each table or code block wider than its box.
MEASURE = """
const wider = element => element.scrollWidth > element.clientWidth + 1;
const blocks = [...document.querySelectorAll("div.body table, div.body pre")];
return [
    document.documentElement.scrollWidth,
    blocks.filter(wider).map(element => element.textContent.trim().slice(0, 80)),
];
"""


@pytest.fixture(scope="module")
def built_docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The docs, built as ``make docs`` builds them (warnings are errors)."""
    out = tmp_path_factory.mktemp("html")
    command = [sys.executable, "-m", "sphinx", "-W", "-q", "-b", "html", "-d", str(out / ".doctrees")]
    built = subprocess.run(
        [*command, str(ROOT / "docs"), str(out)], capture_output=True, text=True, timeout=600, check=False
    )
    assert built.returncode == 0, built.stderr
    return out


@pytest.mark.parametrize("page", ["config", "troubleshooting", "quickstart"])
def test_the_page_fits_a_1280_px_window(browser: WebDriver, built_docs: Path, page: str) -> None:  # noqa: F811
    browser.get((built_docs / f"{page}.html").as_uri())
    assert browser.execute_script("return window.innerWidth") == WIDTH
    page_width, cut_off = browser.execute_script(MEASURE)
    assert page_width <= WIDTH
    assert cut_off == []
