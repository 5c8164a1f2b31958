"""Render the browser client in headless Chromium with some chat in it:
``python -m scripts.web_screenshot DESKTOP.png PHONE.png``.

Starts a server with ``--web`` on 127.0.0.1, logs in three people (two in
the browser, one over TCP), chats in two rooms (a topic, a mention, a
whisper), then shoots the page at desktop and at phone width.
"""

from __future__ import annotations

import socket
import sys
import tempfile

from chatproto import codec
from scripts import browser
from scripts.spawn import server_argv, start_server

WAIT = 20


def _tcp_peer(port: int, nick: str) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
    for packet in (codec.Login(nick, 2), codec.Join("general"), codec.Join("design")):
        sock.sendall(codec.encode_frame(packet))
    return sock


def _until(driver, script: str, what: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(driver, WAIT, 0.05).until(lambda d: d.execute_script(script), message=what)


def _log_in(driver, url: str, nick: str) -> str:
    from selenium.webdriver.common.by import By

    driver.switch_to.new_window("tab")
    driver.get(url)
    driver.find_element(By.ID, "nick").clear()
    driver.find_element(By.ID, "nick").send_keys(nick)
    driver.find_element(By.ID, "login-button").click()
    _until(driver, "return document.body.dataset.state === 'connected'", f"{nick} connected")
    return driver.current_window_handle


def _say(driver, handle: str, text: str) -> None:
    from selenium.webdriver.common.by import By

    driver.switch_to.window(handle)
    box = driver.find_element(By.ID, "message-input")
    box.send_keys(text)
    box.submit()


def main(desktop: str, phone: str) -> int:
    why = browser.missing()
    if why:
        print(f"web screenshot skipped: {why}", file=sys.stderr)
        return 0
    folder = tempfile.mkdtemp(prefix="chatshot-")
    argv = server_argv("--web", "tcp:0:interface=127.0.0.1", "--history", f"{folder}/h.sqlite3")
    proc, (port, web_port) = start_server(argv, 2)
    driver = browser.chromium(1000, 560)
    url = f"http://127.0.0.1:{web_port}/"
    try:
        bob = _log_in(driver, url, "bob")
        carol = _tcp_peer(port, "carol")
        ann = _log_in(driver, url, "ann")
        _say(driver, bob, "/join design")
        _say(driver, ann, "/join design")
        _until(driver, "return document.getElementById('room-title').textContent === 'design'", "design")
        _say(driver, bob, "/topic Friday's release: what is left?")
        lines = [
            (carol, "The login page is done; screenshots are in the wiki."),
            (bob, "ann, can you look at the reconnect logic before Friday?"),
            (ann, "Yes, after lunch. It resumes and catches up by seq."),
            (carol, "I'll test it on my phone tonight."),
        ]
        for who, text in lines:
            if isinstance(who, socket.socket):
                who.sendall(codec.encode_frame(codec.Say(text, None, "design")))
            else:
                _say(driver, who, text)
            _until(driver, f"return document.body.textContent.includes({text!r})", text)
        carol.sendall(codec.encode_frame(codec.Say("Lunch at noon?", None, "general")))
        carol.sendall(codec.encode_frame(codec.Whisper("ann", "psst: cake on Friday")))
        driver.switch_to.window(ann)
        _until(driver, "return document.querySelector('.unread') !== null", "an unread count")
        _until(driver, "return document.body.textContent.includes('cake')", "the whisper")
        driver.save_screenshot(desktop)
        driver.set_window_size(390, 760)
        driver.save_screenshot(phone)
        carol.close()
    finally:
        driver.quit()
        proc.terminate()
        proc.wait(20)
    print(f"wrote {desktop} and {phone}")
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
