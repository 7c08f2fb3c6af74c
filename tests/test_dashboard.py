"""The example app's dashboard in a real headless Chromium, served by a real gunicorn
with 2 workers on a real redis-server."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.chrome.webdriver import WebDriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from bench.loadgen import gunicorn

from .conftest import gunicorn_workers, load_every_worker

FLAGS = (
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-extensions",
    "--no-first-run",
    "--window-size=1280,1100",
)


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    """Debian's headless Chromium, driven through its chromedriver; quit afterwards."""
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        message = "no chromium/chromedriver on PATH: run 'make browser' (Debian: chromium chromium-driver)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    options = Options()
    options.binary_location = chromium
    for flag in FLAGS:
        options.add_argument(flag)
    browser = webdriver.Chrome(options=options, service=Service(driver))
    yield browser
    browser.quit()


def panels(browser: WebDriver) -> dict[int, dict[str, int]]:
    """Each worker's chart panel: pid -> how many samples it draws, and its pool's peak."""
    return {
        int(panel.get_attribute("data-pid") or 0): {
            "samples": int(panel.get_attribute("data-samples") or 0),
            "peak": int(panel.get_attribute("data-peak") or 0),
        }
        for panel in browser.find_elements(By.CSS_SELECTOR, "section.worker")
    }


def test_dashboard_charts_each_worker_and_a_burst(
    browser: WebDriver, redis_url: str, server: Redis, tmp_path: Path
) -> None:
    env = {"FLASK_REDIS_STATS_INTERVAL": "0.5"}
    with gunicorn("example_app:create_app()", redis_url=redis_url, workers=2, threads=4, env=env) as (port, master):
        workers = gunicorn_workers(master, 2)
        load_every_worker(port, workers, server)
        browser.get(f"http://127.0.0.1:{port}/")
        wait = WebDriverWait(browser, 30, poll_frequency=0.1)
        wait.until(lambda b: {pid for pid, p in panels(b).items() if p["samples"] >= 3} == workers)

        browser.find_element(By.ID, "burst-slow").click()
        wait.until(lambda b: "slow burst started in pid" in b.find_element(By.ID, "burst-status").text)
        started = {int(pid) for pid in browser.find_element(By.ID, "burst-status").text.split("pid ")[1].split(", ")}
        # The peak, not a sample: a sample once a second may fall just before or after a
        # burst of a second or so. 16 threads on a pool of 10 take it to its limit.
        wait.until(lambda b: all(panels(b).get(pid, {}).get("peak", 0) == 10 for pid in started))

        def waits(pid: int) -> int:
            cells = browser.find_elements(By.CSS_SELECTOR, f'#processes tr[data-pid="{pid}"] td')
            return int(cells[6].text) if cells and cells[6].text != "-" else 0

        wait.until(lambda b: all(waits(pid) > 0 for pid in started))
        screenshot = tmp_path / "dashboard.png"
        assert browser.save_screenshot(str(screenshot))
        assert set(panels(browser)) == workers  # one chart per worker, no other process
        assert browser.find_element(By.ID, "error").get_attribute("hidden") is not None
    assert started <= workers
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
