"""Browser tests: the page in Debian's headless Chromium against a real
server process on 127.0.0.1. Skipped, with the reason, where there is no
Chromium; everything else still runs."""

from __future__ import annotations

import re
import sys

import pytest

from scripts import browser
from tests.processes import WAIT, Server, TcpPeer


@pytest.fixture(scope="session")
def driver():
    why = browser.missing()
    if why is not None:
        pytest.skip(f"skipped: {why}")
    session = browser.chromium()
    session.set_script_timeout(WAIT)
    yield session
    session.quit()


@pytest.fixture
def server_args() -> tuple[str, ...]:
    """More options for the ``server`` fixture's server (a test may parametrize this)."""
    return ()


@pytest.fixture
def server(tmp_path, server_args):
    running = Server(str(tmp_path / "history.sqlite3"), *server_args)
    running.start()
    yield running
    running.stop()


@pytest.fixture
def peers(server):
    made = []

    def make(nick: str) -> TcpPeer:
        peer = TcpPeer(server.port, nick)
        made.append(peer)
        return peer

    yield make
    for peer in made:
        peer.close()


def pytest_report_header(config):
    why = browser.missing()
    return f"browser: {why or browser.CHROMIUM} (python {sys.version.split()[0]})"


#: Installed in every tab before the page's own scripts: uncaught errors and
#: unhandled rejections are kept in window.__errors for the tests to read.
COLLECTOR = """
window.__errors = [];
window.addEventListener("error",
  (e) => window.__errors.push(`error: ${e.message} at ${e.filename}:${e.lineno}`));
window.addEventListener("unhandledrejection",
  (e) => window.__errors.push(`unhandled rejection: ${e.reason}`));
"""

#: The browser's own report of a WebSocket it could not open, and of the
#: page's plain request to the same address asking why (refused while the
#: server is down, 426 once it is back): expected while a test has stopped
#: the server.
NETWORK_NOISE = re.compile(
    r"WebSocket connection to 'ws://127\.0\.0\.1:\d+/ws' failed"
    r"|http://127\.0\.0\.1:\d+/ws - Failed to load resource: "
    r"(net::ERR_CONNECTION_REFUSED|the server responded with a status of 426 )"
)


def console_errors(driver, allowed=NETWORK_NOISE, levels=("SEVERE", "WARNING")) -> list[str]:
    """The console's errors and warnings since the last call, from every tab
    (CSP violations, exceptions, failed loads, deprecations), but for
    ``allowed`` ones."""
    return [
        f"{entry['level']}: {entry['message']}"
        for entry in driver.get_log("browser")
        if entry["level"] in levels and not (allowed and allowed.search(entry["message"]))
    ]


class Page:
    """One tab of the page, logged in or not. Every call switches to it first."""

    def __init__(self, driver, url: str) -> None:
        self.driver = driver
        driver.switch_to.new_window("tab")
        self.handle = driver.current_window_handle
        driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": COLLECTOR})
        driver.get(url)

    def errors(self) -> list[str]:
        """What the collector caught in this tab (uncaught errors, rejections)."""
        return self.js("return window.__errors || []")

    def here(self):
        self.driver.switch_to.window(self.handle)
        return self.driver

    def find(self, css: str):
        from selenium.webdriver.common.by import By

        return self.here().find_element(By.CSS_SELECTOR, css)

    def all(self, css: str):
        from selenium.webdriver.common.by import By

        return self.here().find_elements(By.CSS_SELECTOR, css)

    def wait(self, condition, what: str = "the condition"):
        """Until ``condition()`` is truthy (polled; at most WAIT seconds)."""
        from selenium.webdriver.support.ui import WebDriverWait

        self.here()
        return WebDriverWait(self.driver, WAIT, poll_frequency=0.05).until(
            lambda _: condition(), message=f"waited {WAIT} s for {what}"
        )

    def js(self, script: str, *args):
        return self.here().execute_script(script, *args)

    def log_in(self, nick: str, password: str | None = None, register: bool = False) -> None:
        self.find("#nick").clear()  # the page remembers the last nick
        self.find("#nick").send_keys(nick)
        if password:
            self.find("#password").send_keys(password)
        if register:
            self.find("#register").click()
            self.find("#password-confirm").send_keys(password)
        self.find("#login-button").click()
        self.wait(lambda: self.state() == "connected", f"{nick} connected")
        self.wait(lambda: self.current_room() != "", "a room shown")

    def current_room(self) -> str:
        return self.js("return document.getElementById('room-title').textContent")

    def say(self, text: str) -> None:
        """Type ``text`` (its newlines as Shift+Enter) and send it with Enter."""
        from selenium.webdriver.common.keys import Keys

        box = self.find("#message-input")
        for n, part in enumerate(text.split("\n")):
            if n:
                box.send_keys(Keys.SHIFT, Keys.ENTER)
            box.send_keys(part)
        box.send_keys(Keys.ENTER)

    def lines(self, css: str = "#transcript li") -> list[str]:
        script = "return [...document.querySelectorAll(arguments[0])].map(li => li.querySelector('.text')"
        return self.js(f"{script}?.textContent ?? li.textContent)", css)

    def state(self) -> str:
        """The session's state: connecting, connected, reconnecting, given_up..."""
        return self.js("return document.body.dataset.state")

    def close(self) -> None:
        self.here().close()


@pytest.fixture
def pages(driver, server):
    """Open pages of the server's site; closed after the test."""
    opened = []

    def open_page(url: str | None = None) -> Page:
        page = Page(driver, url or server.url)
        opened.append(page)
        return page

    console_errors(driver)  # what earlier tests left in the log is theirs
    yield open_page
    caught = [e for page in opened for e in page.errors()]
    for page in opened:
        page.close()
    driver.switch_to.window(driver.window_handles[0])
    caught += console_errors(driver, allowed=getattr(open_page, "allowed", NETWORK_NOISE))
    assert not caught, f"the page logged errors: {caught}"


def open_dialog(page: Page, opener: str, dialog: str) -> None:
    """Click ``opener`` and wait for the ``<dialog>`` to be open."""
    page.find(opener).click()
    page.wait(lambda: page.js(f"return document.querySelector('{dialog}').open"), f"{dialog} to open")


def close_dialog(page: Page, dialog: str) -> None:
    """Its Close button, and wait for it to be closed."""
    page.find(f"{dialog} button[value=close]").click()
    page.wait(lambda: not page.js(f"return document.querySelector('{dialog}').open"), f"{dialog} to close")
