"""Headless Debian Chromium driven by Selenium through Debian's chromedriver.

Flags from the machine notes: --headless --no-sandbox (we run as root) --disable-gpu, and the
background-networking switches, without which Chromium keeps dialing Google on this closed network;
a fresh --user-data-dir per browser so runs never share profiles or locks. Selenium Manager is never
asked to download anything: both binaries are given explicitly.

    with headless_chromium(tmp_path / "chrome") as driver:
        driver.get("http://127.0.0.1:5000/")
"""
from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path
from typing import Iterator

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = (
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic",
    "--no-first-run", "--no-default-browser-check", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-extensions", "--window-size=1400,1000",
)


def chromium_available() -> str | None:
    """None when Chromium and chromedriver are installed, else what is missing (for a skip reason)."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not (os.path.exists(p) or shutil.which(p))]
    return f"missing {', '.join(missing)} (apt-get install chromium chromium-driver)" if missing else None


@contextlib.contextmanager
def headless_chromium(workdir: str | os.PathLike[str], *, page_load_timeout_s: float = 60.0) -> Iterator:
    """A Selenium WebDriver on a fresh headless Chromium; quits (browser and driver) on exit."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    workdir = Path(workdir)
    profile = workdir / "profile"
    profile.mkdir(parents=True, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    service = Service(CHROMEDRIVER, log_output=str(workdir / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=options)
    try:
        driver.set_page_load_timeout(page_load_timeout_s)
        yield driver
    finally:
        driver.quit()
