"""The browser client in real headless Chromium against a real server."""

from __future__ import annotations

import functools
import http.server
import threading

from conftest import Page

from chatproto import codec
from chatproto.backends.eventlog import Draft
from chatproto.backends.sqlite import SQLiteLog
from tests.processes import Server, TcpPeer


def test_log_in_join_a_room_send_and_receive(pages, peers):
    page = pages()
    page.log_in("ann")
    assert page.current_room() == "general"
    page.say("hello from chromium")
    page.wait(lambda: page.lines("#transcript li.own.confirmed") == ["hello from chromium"], "the echo")
    page.find("#join-button").click()
    page.find("#join-room").send_keys("side")
    page.find("#join-confirm").click()
    page.wait(lambda: page.current_room() == "side", "the new room shown")
    assert page.lines("#room-list .room-name") == ["general", "side"]
    bob = peers("bob")
    bob.send(codec.Join("side"))
    bob.expect(codec.RoomState)
    page.wait(lambda: "bob" in page.lines("#member-list li"), "bob in the member list")
    bob.send(codec.Say("hi ann", None, "side"))
    page.wait(lambda: "hi ann" in page.lines("#transcript li.message"), "bob's message")
    assert page.all("#transcript li.mention"), "a mention is marked"


def test_two_pages_chat_and_whisper(pages):
    ann, bob = pages(), pages()
    ann.log_in("ann")
    bob.log_in("bob")
    ann.wait(lambda: "bob" in ann.lines("#member-list li"), "bob joined")
    bob.say("hello ann")
    ann.wait(lambda: "hello ann" in ann.lines("#transcript li.message"), "bob's message at ann")
    ann.say("/msg bob a secret")
    bob.wait(lambda: "a secret" in bob.lines("#transcript li.whisper"), "the whisper")
    assert "a secret" not in ann.lines("#transcript li.message:not(.whisper)")


def test_a_page_and_a_tcp_client_in_one_room(pages, peers):
    page = pages()
    page.log_in("ann")
    desk = peers("desk")
    desk.send(codec.Join("general"))
    desk.expect(codec.RoomState)
    desk.send(codec.Say("from the desktop protocol", "d1", "general"))
    page.wait(lambda: "from the desktop protocol" in page.lines(), "the TCP client's message")
    page.say("from the browser")
    said = desk.expect(codec.MessagePacket, lambda m: m.sender == "ann")
    assert (said.text, said.room) == ("from the browser", "general")


def test_older_history_loads_when_scrolled_up(tmp_path, driver):
    history = str(tmp_path / "long.sqlite3")
    log = SQLiteLog(history)
    log.append([Draft(1.0, "old", f"line {n}") for n in range(300)])
    log.close()
    server = Server(history)
    server.start()
    try:
        page = Page(driver, server.url)
        page.log_in("ann")
        page.wait(lambda: len(page.lines("#transcript li.message")) >= 50, "the replayed history")
        for _ in range(20):  # bounded: six pages of 50 are enough
            if "line 0" in page.lines("#transcript li.message"):
                break
            shown = len(page.lines("#transcript li.message"))
            page.js("document.getElementById('transcript').scrollTop = 0")
            page.wait(lambda n=shown: len(page.lines("#transcript li.message")) > n, "an older page")
        texts = page.lines("#transcript li.message")
        assert texts == [f"line {n}" for n in range(300)], "every line once, in order"
        page.close()
    finally:
        server.stop()
        driver.switch_to.window(driver.window_handles[0])


def test_a_server_restart_then_reconnect_and_catch_up(pages, server):
    page = pages()
    page.log_in("ann")
    page.say("before")
    page.wait(lambda: page.lines("#transcript li.own.confirmed") == ["before"], "the first message")
    server.stop()
    page.wait(lambda: page.state() in ("reconnecting", "connecting"), "a drop seen")
    server.restart()
    desk = TcpPeer(server.port, "desk")
    try:
        desk.send(codec.Join("general"))
        desk.expect(codec.RoomState)
        for n in range(3):
            desk.send(codec.Say(f"while you were away {n}", None, "general"))
        page.wait(lambda: page.state() == "connected", "back")
        page.say("after")
        expected = ["before", *[f"while you were away {n}" for n in range(3)], "after"]
        page.wait(lambda: page.lines("#transcript li.message") == expected, "nothing lost, nothing twice")
    finally:
        desk.close()


def test_a_refused_message_is_retried(driver, tmp_path):
    server = Server(str(tmp_path / "h.sqlite3"), "--rate", "2", "--burst", "1")
    server.start()
    try:
        page = Page(driver, server.url)
        page.log_in("ann")
        page.say("first")
        page.say("second")
        page.wait(lambda: page.all("#transcript li.failed .retry"), "the refusal")
        assert "slow down" in page.find("#transcript li.failed .mark").text
        for _ in range(100):  # bounded; the bucket refills in half a second: a few tries
            page.find("#transcript li.failed .retry").click()
            page.wait(lambda: page.all("#transcript li.failed .retry") or confirmed(page), "an answer")
            if confirmed(page):
                break
        assert page.lines("#transcript li.message") == ["first", "second"]
        assert not page.all("#transcript li.failed")
        page.close()
    finally:
        server.stop()
        driver.switch_to.window(driver.window_handles[0])


def confirmed(page) -> bool:
    return "second" in page.lines("li.own.confirmed")


OPENER = """
<!doctype html><link rel="icon" href="data:,"><script>
const ws = new WebSocket("ws://127.0.0.1:%d/ws");
ws.onopen = () => document.title = "open";
ws.onclose = (e) => { if (document.title !== "open") document.title = "refused " + e.code; };
</script>
"""


def test_a_page_of_another_origin_is_refused(pages, server, tmp_path):
    (tmp_path / "index.html").write_text(OPENER % server.web_port)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    other = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=other.serve_forever, daemon=True)
    thread.start()
    try:
        page = pages(f"http://127.0.0.1:{other.server_address[1]}/index.html")
        page.wait(lambda: page.here().title.startswith(("open", "refused")), "the socket's fate")
        assert page.here().title == "refused 1006", "the handshake was answered 403"
        own = pages()
        own.log_in("ann")  # the page's own origin is let in
    finally:
        other.shutdown()
        other.server_close()


def test_an_account_registered_on_the_page_needs_its_password(pages):
    first = pages()
    first.log_in("ann", "correct horse", register=True)
    first.wait(lambda: any("registered" in line for line in first.lines("#transcript li.notice")), "DONE")
    intruder = pages()
    intruder.find("#nick").clear()
    intruder.find("#nick").send_keys("ann")
    intruder.find("#password").send_keys("wrong password")
    intruder.find("#login-button").click()
    refusal = "Wrong nick or password."
    intruder.wait(lambda: intruder.find("#login-error").text == refusal, "the refusal in words")
    second = pages()
    second.log_in("ann", "correct horse")  # a second device of the same account
    second.say("from my phone")
    first.wait(lambda: "from my phone" in first.lines("#transcript li.own"), "the other device's as own")


def test_at_phone_width_the_panes_fold_away(pages, driver):
    page = pages()
    page.log_in("ann")
    size = driver.get_window_size()
    try:
        driver.set_window_size(390, 800)
        page.wait(lambda: not page.find("#rooms-pane").is_displayed(), "the rooms pane folded")
        assert page.find("#message-input").is_displayed()
        page.find("#toggle-rooms").click()
        page.wait(lambda: page.find("#rooms-pane").is_displayed(), "the rooms pane shown on demand")
        assert page.lines("#room-list .room-name") == ["general"]
    finally:
        driver.set_window_size(size["width"], size["height"])
