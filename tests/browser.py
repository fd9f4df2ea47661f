"""A real headless Chromium (Debian's chromium and chromium-driver) driven by Selenium, for the
dashboard's and the report's tests; ``skip_reason()`` says why it cannot run here."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from typing import Any, Iterator

CHROMIUM = "/usr/bin/chromium"
DRIVER = "/usr/bin/chromedriver"
#: Without the networking flags Chromium waits for the network, which an offline machine
#: never answers.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1280,1000")


def skip_reason() -> str | None:
    """Why the browser tests cannot run here, or None."""
    for path, package in ((CHROMIUM, "chromium"), (DRIVER, "chromium-driver")):
        if not os.path.exists(path):
            return f"{path} is missing (apt-get install {package}; make test-deps does)"
    for module, extra in (("selenium", "test"), ("bokeh", "dashboard")):
        if importlib.util.find_spec(module) is None:
            return f"{module} is not installed (pip install -e '.[{extra}]')"
    return None


def chromium() -> Iterator[Any]:
    """A Chromium with a fresh profile, closed (and its profile removed) afterwards."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    profile = tempfile.mkdtemp(prefix="remotefn-chromium-")
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def console_errors(driver: Any) -> list[str]:
    """The page's console messages of level SEVERE so far."""
    return [entry["message"] for entry in driver.get_log("browser")
            if entry["level"] == "SEVERE"]
