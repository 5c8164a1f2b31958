"""The one way to drive a browser here: Debian's headless Chromium with its
own chromedriver (one source package, so their versions match), through
Selenium with explicit paths, so that nothing is ever downloaded."""

from __future__ import annotations

import os
import shutil

CHROMIUM = os.environ.get("CHAT_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("CHAT_CHROMEDRIVER", "/usr/bin/chromedriver")


def missing() -> str | None:
    """Why no browser can be had here, or None."""
    for path in (CHROMIUM, CHROMEDRIVER):
        if not (os.path.exists(path) or shutil.which(path)):
            return f"no chromium ({path} is missing: apt-get install chromium chromium-driver)"
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "no selenium (pip install -e '.[test]')"
    return None


def chromium(width: int = 1100, height: int = 720):
    """A headless Chromium session; the caller quits it."""
    os.environ["SE_OFFLINE"] = "true"  # Selenium Manager must never fetch a driver or a browser
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in (
        "--headless=new",
        "--no-sandbox",  # CI runs as root
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--no-first-run",
        "--disable-background-timer-throttling",  # a page in a background tab still reconnects on time
        "--disable-renderer-backgrounding",
        f"--window-size={width},{height}",
    ):
        options.add_argument(argument)
    # Every console message (errors, CSP violations, warnings) for driver.get_log("browser").
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
