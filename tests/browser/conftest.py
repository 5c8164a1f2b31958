"""Browser tests: the page in Debian's headless Chromium against a real
server process on 127.0.0.1. Skipped, with the reason, where there is no
Chromium; everything else still runs."""

from __future__ import annotations

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
def server(tmp_path):
    running = Server(str(tmp_path / "history.sqlite3"))
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


class Page:
    """One tab of the page, logged in or not. Every call switches to it first."""

    def __init__(self, driver, url: str) -> None:
        self.driver = driver
        driver.switch_to.new_window("tab")
        self.handle = driver.current_window_handle
        driver.get(url)

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
        self.find("#login-button").click()
        self.wait(lambda: self.state() == "connected", f"{nick} connected")
        self.wait(lambda: self.current_room() != "", "a room shown")

    def current_room(self) -> str:
        return self.js("return document.getElementById('room-title').textContent")

    def say(self, text: str) -> None:
        box = self.find("#message-input")
        box.send_keys(text)
        box.submit()

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

    yield open_page
    for page in opened:
        page.close()
    driver.switch_to.window(driver.window_handles[0])
