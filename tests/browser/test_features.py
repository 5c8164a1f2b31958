"""The page's answers to what a new user found missing or broken: each test
drives real Chromium against a real server process, as a person would."""

from __future__ import annotations

import re
import socket

import pytest
from conftest import Page, close_dialog, open_dialog

from chatproto import codec
from tests.processes import WAIT, Server, TcpPeer, admin_account

PASSWORD = "correct horse"


def register(port: int, nick: str, password: str = PASSWORD) -> None:
    """Make ``nick`` an account (as a desktop client would), then log it out."""
    peer = TcpPeer(port, nick)
    peer.send(codec.AccountRequest("register", password, ref="r"))
    peer.expect(codec.Done)
    peer.close()


def joined(peer: TcpPeer, room: str) -> None:
    peer.send(codec.Join(room))
    peer.expect(codec.RoomState, lambda r: r.room == room)


def result(page: Page, dialog: str) -> str:
    return page.find(f"{dialog} .result").text


def switch_room(page: Page, name: str) -> None:
    page.find(f"#room-list li[data-room={name}] .room-name").click()
    page.wait(lambda: page.current_room() == name, f"{name} shown")


# -- 1. whispers stay ------------------------------------------------------------------


def test_whispers_stay_where_they_were_shown(pages):
    ann, bob = pages(), pages()
    ann.log_in("ann")
    bob.log_in("bob")
    ann.say("/msg bob a secret")
    bob.wait(lambda: "a secret" in bob.lines("#transcript li.whisper"), "the whisper at bob")
    ann.wait(lambda: not ann.all("#transcript li.whisper.sending"), "ann's whisper confirmed")
    assert ann.lines("#transcript li.whisper") == ["a secret"], "the sender still sees it"
    assert "→ bob" in ann.find("#transcript li.whisper .from").text
    bob.say("/join side")
    bob.wait(lambda: bob.current_room() == "side", "side shown")
    assert "a secret" not in bob.lines("#transcript li.whisper")
    switch_room(bob, "general")
    assert bob.lines("#transcript li.whisper") == ["a secret"], "back in general, the whisper is still there"
    assert "ann → you" in bob.find("#transcript li.whisper .from").text


def test_whispers_and_presence_survive_a_reload(pages, server):
    ann, bob = pages(), pages()
    ann.log_in("ann")
    bob.log_in("bob")
    ann.wait(lambda: "bob joined" in ann.lines("#transcript li.presence"), "bob's join")
    bob.say("/msg ann kept across reloads")
    ann.wait(lambda: "kept across reloads" in ann.lines("#transcript li.whisper"), "the whisper")
    ann.here().refresh()
    ann.wait(lambda: ann.state() == "connected", "back after the reload")
    ann.wait(lambda: "kept across reloads" in ann.lines("#transcript li.whisper"), "the whisper kept")
    assert "bob joined" in ann.lines("#transcript li.presence")
    assert not ann.all("#transcript li.status"), "a reload is no outage"


# -- 2. presence and outages ----------------------------------------------------------------


def test_joins_leaves_and_quits_are_in_the_transcript(pages, server):
    page = pages()
    page.log_in("ann")
    bob = TcpPeer(server.port, "bob")
    joined(bob, "general")
    page.wait(lambda: "bob joined" in page.lines("#transcript li.presence"), "bob's join")
    bob.send(codec.Part("general", "lunch"))
    page.wait(lambda: "bob left: lunch" in page.lines("#transcript li.presence"), "bob's part")
    joined(bob, "general")
    bob.send(codec.Quit("bye all"))
    page.wait(lambda: "bob quit: bye all" in page.lines("#transcript li.presence"), "bob's quit")
    bob.close()
    carol = TcpPeer(server.port, "carol")
    joined(carol, "general")
    carol.close()  # no QUIT: the connection drops
    page.wait(lambda: "carol lost the connection" in page.lines("#transcript li.presence"), "carol's drop")
    page.say("/join side")
    page.wait(lambda: page.current_room() == "side", "side")
    switch_room(page, "general")
    assert page.lines("#transcript li.presence")[-1] == "carol lost the connection", "kept across switches"


def test_an_outage_is_marked_in_the_transcript(pages, server):
    page = pages()
    page.log_in("ann")
    page.say("before")
    page.wait(lambda: page.lines("#transcript li.own.confirmed") == ["before"], "the first message")
    server.stop()
    page.wait(
        lambda: any("connection lost" in t for t in page.lines("#transcript li.status")), "the loss marked"
    )
    server.restart()
    desk = TcpPeer(server.port, "desk")
    try:
        joined(desk, "general")
        for n in range(3):
            desk.send(codec.Say(f"while you were away {n}", None, "general"))
        desk.expect(codec.MessagePacket, lambda m: m.text == "while you were away 2")
        page.wait(lambda: page.state() == "connected", "back")
        done = "reconnected (3 missed messages fetched)"
        page.wait(lambda: done in page.lines("#transcript li.status"), "the reconnect marked")
        lines = page.lines("#transcript li")
        lost = next(n for n, t in enumerate(lines) if t.startswith("connection lost"))
        assert lines[lost - 1] == "before"
        assert lines.index(done) > lines.index("while you were away 2"), "the marker follows what was fetched"
    finally:
        desk.close()


# -- 3. login errors in words -------------------------------------------------------------


def test_login_errors_are_said_in_words_with_the_wait(pages, server):
    register(server.port, "ann")
    page = pages()
    for _ in range(3):
        page.find("#nick").clear()
        page.find("#nick").send_keys("ann")
        page.find("#password").clear()
        page.find("#password").send_keys("wrong password")
        page.js("document.getElementById('login-error').textContent = ''")
        page.find("#login-button").click()
        page.wait(lambda: page.find("#login-error").text, "an answer")
        assert page.find("#login-error").text == "Wrong nick or password."
    # The wait after the third wrong password is 1 s and doubles with each
    # further one: on a loaded machine a try may come after it has passed,
    # so try again (a bounded number of times) until the wait is met.
    answers = []
    for _ in range(6):
        page.js("document.getElementById('login-error').textContent = ''")
        page.find("#login-button").click()
        page.wait(lambda: page.find("#login-error").text, "an answer")
        answers.append(page.find("#login-error").text)
        if "Too many" in answers[-1]:
            break
    assert re.fullmatch(r"Too many wrong passwords: wait \d+ s before trying again\.", answers[-1]), answers
    assert set(answers[:-1]) <= {"Wrong nick or password."}, answers
    page.find("#password").clear()
    page.find("#login-button").click()
    page.wait(lambda: "registered" in page.find("#login-error").text, "no password")
    assert page.find("#login-error").text == "This nick is registered: enter its password to log in."


def test_a_full_server_is_said_in_words(driver, tmp_path):
    """The server fills up once the page is loaded: its WebSocket is refused
    at the door (a 503 before any handshake, which a browser shows as 1006),
    and the page asks why and says it in words."""
    server = Server(str(tmp_path / "h.sqlite3"), "--max-clients", "12", "--login-timeout", "60")
    server.start()
    held = []
    try:
        page = Page(driver, server.url)
        page.wait(lambda: page.find("#nick").is_displayed(), "the login form")
        for _ in range(12):  # whatever room is left, taken (some of these are refused: enough)
            held.append(socket.create_connection(("127.0.0.1", server.port), timeout=WAIT))
        page.find("#nick").send_keys("ann")
        page.find("#login-button").click()
        page.wait(lambda: "full" in page.find("#login-error").text, "refused")
        assert page.find("#login-error").text == "The server is full right now: try again in a few minutes."
        page.close()
    finally:
        for sock in held:
            sock.close()
        server.stop()
        driver.switch_to.window(driver.window_handles[0])


def test_registering_needs_the_password_twice(pages):
    page = pages()
    page.find("#nick").send_keys("ann")
    page.find("#password").send_keys(PASSWORD)
    page.find("#register").click()
    page.wait(lambda: page.find("#password-confirm").is_displayed(), "the confirmation field")
    page.find("#password-confirm").send_keys("correct horsE")
    page.find("#login-button").click()
    page.wait(lambda: "differ" in page.find("#login-error").text, "the mismatch")
    assert page.state() in (None, "", "disconnected"), "nothing was sent"


# -- 4. the composer, links, badges, reloads --------------------------------------------------


def test_enter_sends_shift_enter_breaks_the_line(pages, peers):
    page = pages()
    page.log_in("ann")
    desk = peers("desk")
    joined(desk, "general")
    page.say("first line\nsecond line")
    said = desk.expect(codec.MessagePacket, lambda m: m.sender == "ann")
    assert said.text == "first line\nsecond line"
    page.wait(lambda: page.lines("#transcript li.own.confirmed") == ["first line\nsecond line"], "shown")
    height = page.js(
        "return document.querySelector('#transcript li.own .text').getBoundingClientRect().height"
    )
    single = page.js("return document.querySelector('#transcript li .from').getBoundingClientRect().height")
    assert height > 1.5 * single, "rendered on two lines"
    box = page.find("#message-input")
    assert box.tag_name == "textarea"
    from selenium.webdriver.common.keys import Keys

    for key in ("a", (Keys.SHIFT, Keys.ENTER), "b", (Keys.SHIFT, Keys.ENTER), "c"):
        box.send_keys(*key)  # one call each: Selenium holds SHIFT to the end of a call
    page.wait(lambda: box.get_attribute("value") == "a\nb\nc", "three lines typed, nothing sent")
    tall = page.js("return document.getElementById('message-input').getBoundingClientRect().height")
    box.send_keys(Keys.ENTER)
    page.wait(lambda: page.find("#message-input").get_attribute("value") == "", "sent and emptied")
    short = page.js("return document.getElementById('message-input').getBoundingClientRect().height")
    assert tall > short * 1.8, f"the box grew to three lines ({tall} > {short})"


def test_blank_and_too_long_messages_are_not_sent_and_said_so(pages, peers):
    from selenium.webdriver.common.keys import Keys

    page = pages()
    page.log_in("ann")
    desk = peers("desk")
    joined(desk, "general")
    box = page.find("#message-input")
    box.send_keys("   ", Keys.ENTER)
    page.wait(lambda: box.get_attribute("value") == "", "only spaces: emptied, nothing sent")
    long = "x" * 4001  # the server's max_text is 4000: as a paste past maxLength would give
    page.js(f"document.getElementById('message-input').value = '{long}'")
    box.send_keys(Keys.ENTER)
    page.wait(
        lambda: any(
            "the message is 4001 characters, the limit is 4000" in t for t in page.lines("#transcript li")
        ),
        "the length said in words",
    )
    assert box.get_attribute("value") == long, "kept in the box, to shorten"
    box.clear()
    page.say("after both")
    said = desk.expect(codec.MessagePacket, lambda m: m.sender == "ann")
    assert said.text == "after both", "neither the spaces nor the long text went out"


def test_links_are_links_and_markup_is_text(pages, peers):
    page = pages()
    page.log_in("ann")
    desk = peers("desk")
    joined(desk, "general")
    desk.send(
        codec.Say(
            "see https://example.org/a?b=1. and <b>bold</b> <img src=x onerror=alert(1)>", None, "general"
        )
    )
    page.wait(lambda: page.all("#transcript li.message a"), "the link")
    links = page.all("#transcript li.message a")
    assert len(links) == 1
    assert links[0].text == "https://example.org/a?b=1"
    assert links[0].get_attribute("href") == "https://example.org/a?b=1"
    assert links[0].get_attribute("target") == "_blank"
    assert links[0].get_attribute("rel") == "noopener noreferrer"
    assert not page.all("#transcript b, #transcript img"), "markup stays text"
    assert "<b>bold</b>" in page.lines("#transcript li.message")[0]


def test_a_mention_badge_differs_from_an_unread_badge(pages, peers):
    page = pages()
    page.log_in("ann")
    page.say("/join side")
    page.wait(lambda: page.current_room() == "side", "side")
    page.say("/join quiet")
    page.wait(lambda: page.current_room() == "quiet", "quiet")
    desk = peers("desk")
    joined(desk, "side")
    joined(desk, "general")
    desk.send(codec.Say("ann, look at this", None, "side"))
    desk.send(codec.Say("nothing for anyone", None, "general"))
    page.wait(lambda: len(page.all("#room-list .unread")) == 2, "two badges")
    side = page.find("#room-list li[data-room=side] .unread")
    general = page.find("#room-list li[data-room=general] .unread")
    assert "mention-badge" in side.get_attribute("class") and side.text == "@1"
    assert "mention-badge" not in general.get_attribute("class") and general.text == "1"
    assert side.value_of_css_property("background-color") != general.value_of_css_property("background-color")


def test_a_reload_keeps_an_account_logged_in(pages):
    """A reload closes the socket without QUIT: for a while the server lets
    the tab's last resume token open the account again (docs/protocol.md 4),
    and the tab keeps no password."""
    page = pages()
    page.log_in("ann", PASSWORD, register=True)
    page.wait(lambda: any("registered" in t for t in page.lines("#transcript li.notice")), "registered")
    page.say("/join side")
    page.wait(lambda: page.current_room() == "side", "side")
    page.say("/msg ann a note to self")
    page.wait(lambda: "a note to self" in page.lines("#transcript li.whisper"), "the whisper")
    stored = page.js("return JSON.stringify(sessionStorage)")
    assert "ann" in stored and PASSWORD not in stored, "the token and nick, never the password"
    assert PASSWORD not in page.js("return JSON.stringify(localStorage)")
    page.here().refresh()
    page.wait(lambda: page.state() == "connected", "connected again, not asked for the password")
    page.wait(
        lambda: sorted(page.lines("#room-list .room-name")) == ["general", "side"], "the account's rooms"
    )
    page.find("#room-list li[data-room=side] .room-name").click()
    page.wait(lambda: page.current_room() == "side", "side shown")
    page.wait(lambda: "a note to self" in page.lines("#transcript li.whisper"), "the whisper kept")


def test_a_guest_reload_keeps_nick_and_rooms(pages):
    page = pages()
    page.log_in("gus")
    page.say("/join side")
    page.wait(lambda: page.current_room() == "side", "side")
    page.here().refresh()
    page.wait(lambda: page.state() == "connected", "connected again after the reload")
    page.wait(lambda: sorted(page.lines("#room-list .room-name")) == ["general", "side"], "both rooms back")
    assert page.js("return window.chatApp.session.nick") == "gus"


# -- 5. operators shown live --------------------------------------------------------------


def test_op_and_deop_update_the_member_list_live(pages, server):
    alice = TcpPeer(server.port, "alice")
    carol = TcpPeer(server.port, "carol")
    try:
        joined(alice, "den")  # the first member: its operator
        joined(carol, "den")
        page = pages()
        page.log_in("bob")
        page.say("/join den")
        page.wait(lambda: page.current_room() == "den", "den")
        page.wait(lambda: sorted(page.lines("#member-list li")) == ["@alice", "bob", "carol"], "members")
        alice.send(codec.Moderate("den", "op", "carol"))
        page.wait(lambda: "@carol" in page.lines("#member-list li"), "carol an operator at once")
        assert "alice made carol an operator" in page.lines("#transcript li.record")
        alice.send(codec.Moderate("den", "deop", "carol"))
        page.wait(lambda: "carol" in page.lines("#member-list li"), "carol no longer one")
    finally:
        alice.close()
        carol.close()


def test_an_operator_back_after_a_reconnect_is_shown_as_one(pages, server):
    register(server.port, "alice")
    alice = TcpPeer(server.port, "alice", PASSWORD)
    joined(alice, "den")  # its creator: an operator, kept with the account
    page = pages()
    page.log_in("bob")
    page.say("/join den")
    page.wait(lambda: sorted(page.lines("#member-list li")) == ["@alice", "bob"], "alice an operator")
    alice.send(codec.Quit())
    alice.close()
    page.wait(lambda: page.lines("#member-list li") == ["bob"], "alice gone")
    back = TcpPeer(server.port, "alice", PASSWORD)  # back in den by her account
    try:
        page.wait(lambda: sorted(page.lines("#member-list li")) == ["@alice", "bob"], "still an operator")
    finally:
        back.close()


# -- 6. moderation and admin from the page ------------------------------------------------------


def member_menu(page: Page, nick: str) -> None:
    page.find(f"#member-list li[data-nick={nick}] .member-name").click()
    page.wait(lambda: page.js("return document.getElementById('member-dialog').open"), "the member menu")


def act(page: Page, what: str) -> None:
    page.find(f"#member-dialog [data-act={what}]").click()


@pytest.mark.parametrize("server_args", [("--join-burst", "40")])  # many requests in a row
def test_an_operator_moderates_from_the_page(pages, server):
    page = pages()
    page.log_in("ann")
    page.say("/join den")
    page.wait(lambda: page.current_room() == "den", "den")
    page.wait(lambda: page.lines("#member-list li") == ["@ann"], "ann the operator")
    bob = TcpPeer(server.port, "bob")
    try:
        joined(bob, "den")
        page.wait(lambda: "bob" in page.lines("#member-list li"), "bob in")
        member_menu(page, "bob")
        act(page, "op")
        page.wait(lambda: "@bob" in page.lines("#member-list li"), "bob an operator")
        act(page, "deop")
        page.wait(lambda: "bob" in page.lines("#member-list li"), "bob no longer one")
        page.find("#member-reason").send_keys("too loud")
        act(page, "kick")
        left = bob.expect(codec.Left, lambda p: p.nick == "bob")
        assert (left.reason, left.message) == ("kicked", "too loud")
        close_dialog(page, "#member-dialog")
        page.wait(
            lambda: "bob was kicked: too loud" in page.lines("#transcript li.presence"), "the kick shown"
        )
        joined(bob, "den")
        page.say("/ban bob spam")
        bob.expect(codec.Left, lambda p: p.nick == "bob" and p.reason == "kicked")
        open_dialog(page, "#room-button", "#room-dialog")
        page.wait(lambda: "bob" in page.find("#room-bans").text, "bob in the ban list")
        page.find("#room-bans button").click()
        page.wait(lambda: page.find("#room-bans").text == "nobody", "the ban lifted")
        page.find("#room-invite-only").click()
        page.find("#room-topic-lock").click()
        page.find("#room-modes-apply").click()
        page.wait(
            lambda: page.js("return window.chatApp.room().inviteOnly && window.chatApp.room().topicLock"),
            "modes",
        )
        page.find("#room-nick").send_keys("bob")
        page.find("#room-invite").click()
        invited = bob.expect(codec.Invited)
        assert (invited.room, invited.by) == ("den", "ann")
        page.wait(lambda: "invited bob" in result(page, "#room-dialog"), "the invitation said")
        close_dialog(page, "#room-dialog")
        joined(bob, "den")  # invited: let in though invite-only
        bob.send(codec.SetTopic("den", "mine now", ref="t"))
        refused = bob.expect(codec.Error, lambda e: e.ref == "t")
        assert refused.code == "topic_locked"
        page.say("/me waves")
        said = bob.expect(codec.MessagePacket, lambda m: m.sender == "ann" and m.action is None)
        assert said.text == "* waves", "as the IRC gateway carries CTCP ACTION"
        page.wait(lambda: "* ann waves" in page.lines("#transcript li.me-action"), "shown as an action")
        page.say("/unban nobody")
        page.wait(lambda: page.lines("#transcript li.error"), "the refusal said")
        assert "not banned" in page.lines("#transcript li.error")[-1]
    finally:
        bob.close()


@pytest.fixture
def admin_server(tmp_path):
    history = str(tmp_path / "admin.sqlite3")
    admin_account(history, "root", PASSWORD)
    running = Server(history, "--admin", "root")
    running.start()
    yield running
    running.stop()


def test_an_admin_lists_kicks_and_bans_from_the_page(driver, admin_server):
    page = Page(driver, admin_server.url)
    bob = TcpPeer(admin_server.port, "bob")
    try:
        page.log_in("root", PASSWORD)
        page.wait(lambda: page.find("#admin-button").is_displayed(), "the admin button")
        open_dialog(page, "#admin-button", "#admin-dialog")
        page.wait(lambda: "bob" in page.find("#admin-sessions").text, "bob in the sessions")
        page.find("#admin-target").send_keys("bob")
        page.find("#admin-reason").send_keys("enough")
        page.find("#admin-ban").click()
        bye = bob.expect(codec.Bye)
        assert bye.reason == "kicked"
        page.wait(lambda: "bob (by root: enough)" in page.find("#admin-bans").text, "the server ban listed")
        page.find("#admin-bans button").click()
        page.wait(lambda: page.find("#admin-bans").text == "nobody is banned", "the ban lifted")
        page.find("#admin-room").send_keys("nowhere")
        page.find("#admin-close").click()
        page.wait(lambda: "nowhere" in result(page, "#admin-dialog"), "the refusal in the dialog")
        close_dialog(page, "#admin-dialog")
        assert not page.errors()
        page.close()
    finally:
        bob.close()
        driver.switch_to.window(driver.window_handles[0])


# -- 7. the account: password and delete ------------------------------------------------------


def test_change_the_password_then_delete_the_account(pages, server):
    register(server.port, "ann")
    page = pages()
    page.log_in("ann", PASSWORD)
    open_dialog(page, "#account-button", "#account-dialog")
    assert "ann is your account" in page.find("#account-state").text
    page.find("#change-current").send_keys(PASSWORD)
    page.find("#change-new").send_keys("battery staple")
    page.find("#change-confirm").send_keys("battery staple")
    page.find("#change-button").click()
    page.wait(lambda: result(page, "#account-dialog") == "Your password is changed.", "DONE")
    page.find("#delete-password").send_keys("battery staple")
    page.find("#delete-button").click()
    page.wait(lambda: "Tick the box" in result(page, "#account-dialog"), "the confirmation asked for")
    page.find("#delete-sure").click()
    page.find("#delete-button").click()
    page.wait(lambda: "deleted" in result(page, "#account-dialog"), "deleted")
    page.wait(lambda: page.find("#account-register").is_displayed(), "a guest again: register offered")
    page.find("#logout-button").click()
    page.wait(lambda: page.find("#login-view").is_displayed(), "logged out")
    page.log_in("ann")  # no password: the nick is no account any more


def test_a_member_who_is_no_operator_sees_why_in_the_room_dialog(pages, server):
    alice = TcpPeer(server.port, "alice")
    try:
        joined(alice, "den")
        alice.send(codec.Moderate("den", "mode", topic_lock=True))
        alice.expect(codec.MessagePacket, lambda m: m.action is not None)
        page = pages()
        page.log_in("bob")
        page.say("/join den")
        page.wait(lambda: page.current_room() == "den", "den")
        open_dialog(page, "#room-button", "#room-dialog")
        assert "Only operators" in page.find("#room-dialog-note").text
        assert "topic is locked" in page.find("#room-dialog-note").text
        assert not page.find("#room-modes-apply").is_displayed(), "no mode switches for a member"
        page.find("#room-topic-input").send_keys("mine")
        page.find("#room-topic-set").click()
        page.wait(lambda: result(page, "#room-dialog"), "the refusal in the dialog")
        assert "error" in page.find("#room-dialog .result").get_attribute("class")
        close_dialog(page, "#room-dialog")
        member_menu(page, "alice")
        assert [b.text for b in page.all("#member-dialog .actions button") if b.is_displayed()] == ["Whisper"]
        close_dialog(page, "#member-dialog")
    finally:
        alice.close()
