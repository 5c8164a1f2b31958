"""One scripted session of the page, as a new user lives it: register, chat
in a room with history, whisper, join and leave, every dialog and member
action, a second user to moderate, phone and desktop widths, the server
killed (-9) and started again, a reload, logging out.

It fails on any console error or warning or uncaught exception in any tab (the one
exception is the browser's own report of a WebSocket refused while the
server is down, and only while it is), and on any dialog that never opens.
Each step leaves a screenshot in build/screenshots/web/NN-step.png; with
CHAT_UPDATE_SCREENSHOTS=1 two of them become the pictures of docs/using.md.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
from pathlib import Path

import pytest
from conftest import NETWORK_NOISE, Page, close_dialog, console_errors, open_dialog

from chatproto import codec
from chatproto.backends.eventlog import Draft
from chatproto.backends.sqlite import SQLiteLog
from tests.processes import Server, TcpPeer, admin_account

ROOT = Path(__file__).resolve().parents[2]
SHOTS = ROOT / "build" / "screenshots" / "web"
#: Steps whose screenshots are docs/using.md's (CHAT_UPDATE_SCREENSHOTS=1).
README_SHOTS = {"desktop": ROOT / "docs" / "web-screenshot.png", "phone": ROOT / "docs" / "web-phone.png"}
PASSWORD = "correct horse"
NEW_PASSWORD = "battery staple"

OLD_TALK = [
    ("bob", "Morning! The release notes are in the wiki."),
    ("carol", "I'll read them after standup."),
    ("bob", "Reminder: demo on Friday at 3."),
]


class Script:
    """The steps' shared bookkeeping: screenshots and the console."""

    def __init__(self, driver, shots: bool = True) -> None:
        self.driver = driver
        self.step_no = 0
        self.outage = False  # while the server is down, a refused WebSocket is expected
        self.tabs: list[Page] = []
        if shots:  # a fresh set for this run
            SHOTS.mkdir(parents=True, exist_ok=True)
            for old in SHOTS.glob("*.png"):
                old.unlink()

    def step(self, page: Page, name: str, readme: str | None = None) -> None:
        """A screenshot of ``page`` now, after checking every tab's console."""
        self.check()
        self.step_no += 1
        path = SHOTS / f"{self.step_no:02d}-{name}.png"
        page.here().save_screenshot(str(path))
        if readme and os.environ.get("CHAT_UPDATE_SCREENSHOTS") == "1":
            shutil.copyfile(path, README_SHOTS[readme])

    def check(self) -> None:
        errors = console_errors(self.driver, allowed=NETWORK_NOISE if self.outage else None)
        for tab in self.tabs:
            errors += tab.errors()
        assert not errors, f"step {self.step_no + 1}: the page logged errors: {errors}"

    def open(self, url: str) -> Page:
        page = Page(self.driver, url)
        self.tabs.append(page)
        return page


def member_menu(page: Page, nick: str) -> None:
    page.wait(lambda: page.all(f"#member-list li[data-nick={nick}]"), f"{nick} in the member list")
    page.find(f"#member-list li[data-nick={nick}] .member-name").click()
    page.wait(
        lambda: page.js("return document.getElementById('member-dialog').open"), "the member menu to open"
    )


def act(page: Page, what: str) -> None:
    page.find(f"#member-dialog [data-act={what}]").click()


def result(page: Page, dialog: str) -> str:
    return page.find(f"{dialog} .result").text


def show_room(page: Page, key: str) -> None:
    page.find(f"#room-list li[data-room={key}] .room-name").click()
    page.wait(lambda: page.current_room() == key, f"{key} shown")


@pytest.fixture
def e2e_server(tmp_path):
    history = str(tmp_path / "e2e.sqlite3")
    log = SQLiteLog(history)
    log.append([Draft(1_764_500_000.0 + n * 60, who, text) for n, (who, text) in enumerate(OLD_TALK * 25)])
    log.close()
    admin_account(history, "root", PASSWORD)
    # A busy user clicks faster than the default join bucket allows.
    running = Server(history, "--admin", "root", "--join-burst", "60", "--join-rate", "5")
    running.start()
    for nick in ("dave",):
        peer = TcpPeer(running.port, nick)
        peer.send(codec.AccountRequest("register", PASSWORD, ref="r"))
        peer.expect(codec.Done)
        peer.close()
    yield running
    running.stop()


def test_a_new_user_session_end_to_end(driver, e2e_server):
    server = e2e_server
    size = driver.get_window_size()
    driver.set_window_size(1100, 720)
    script = Script(driver)
    console_errors(driver)  # earlier tests' messages are theirs
    bob = None
    try:
        bob = run(script, server)
    finally:
        if bob is not None:
            bob.close()
        for tab in script.tabs:
            tab.close()
        driver.switch_to.window(driver.window_handles[0])
        driver.set_window_size(size["width"], size["height"])


def run(script: Script, server: Server) -> TcpPeer:
    # -- a new user opens the page and registers ------------------------------------------
    ann = script.open(server.url)
    ann.wait(lambda: ann.find("#login-form").is_displayed(), "the login form")
    script.step(ann, "login")
    ann.find("#nick").clear()
    ann.find("#nick").send_keys("ann")
    ann.find("#password").send_keys(PASSWORD)
    ann.find("#register").click()
    ann.wait(lambda: ann.find("#password-confirm").is_displayed(), "the confirmation field")
    ann.find("#password-confirm").send_keys(PASSWORD + "!")
    ann.find("#login-button").click()
    ann.wait(lambda: "differ" in ann.find("#login-error").text, "the mismatch said")
    script.step(ann, "register-mismatch")
    ann.find("#password-confirm").clear()
    ann.find("#password-confirm").send_keys(PASSWORD)
    ann.find("#login-button").click()
    ann.wait(lambda: ann.state() == "connected", "ann connected")
    ann.wait(lambda: any("registered" in t for t in ann.lines("#transcript li.notice")), "registered")
    ann.wait(lambda: len(ann.lines("#transcript li.message")) >= 50, "general's history")
    script.step(ann, "registered-with-history")

    # -- chatting in a room with history ------------------------------------------------------
    bob = TcpPeer(server.port, "bob")
    bob.send(codec.Join("general"))
    bob.expect(codec.RoomState)
    ann.wait(lambda: "bob joined" in ann.lines("#transcript li.presence"), "bob's join shown")
    ann.say("Hello! The notes are at https://example.org/notes, thanks bob.")
    ann.say("Two things for Friday:\n- the demo\n- the cake")
    heard = bob.expect(codec.MessagePacket, lambda m: m.sender == "ann" and "cake" in m.text)
    assert heard.text == "Two things for Friday:\n- the demo\n- the cake"
    ann.wait(lambda: len(ann.all("#transcript li.own.confirmed")) == 2, "both confirmed")
    assert ann.find("#transcript li.own a").get_attribute("href") == "https://example.org/notes"
    bob.send(codec.Say("Welcome ann! Ask me anything.", None, "general"))
    ann.wait(lambda: ann.all("#transcript li.mention"), "bob's mention")
    ann.wait(lambda: ann.js("return document.activeElement.id") == "message-input", "the box focused")
    script.step(ann, "chat")

    # -- a second person in a second tab; joining rooms -----------------------------------------
    carol = script.open(server.url)
    carol.log_in("carol")
    carol.wait(lambda: "Friday" in " ".join(carol.lines("#transcript li.message")), "carol sees the chat")
    open_dialog(ann, "#join-button", "#join-dialog")
    ann.wait(lambda: ann.all("#room-directory button"), "the room directory")
    script.step(ann, "join-dialog")
    ann.find("#join-room").send_keys("den")
    ann.find("#join-confirm").click()
    ann.wait(lambda: ann.current_room() == "den", "den shown")
    ann.wait(lambda: ann.lines("#member-list li") == ["@ann"], "ann, den's operator")
    bob.send(codec.Join("den"))
    bob.expect(codec.RoomState, lambda r: r.room == "den")
    ann.wait(lambda: "bob joined" in ann.lines("#transcript li.presence"), "bob in den")
    bob.send(codec.Say("ann, psst: the cake is chocolate", None, "general"))
    ann.wait(lambda: ann.all("#room-list li[data-room=general] .mention-badge"), "a mention badge on general")
    script.step(ann, "den-and-mention-badge")
    show_room(ann, "general")
    assert not ann.all("#room-list .unread"), "read once shown"
    show_room(ann, "den")

    # -- whispers, and /me -------------------------------------------------------------------
    show_room(ann, "general")
    ann.say("/msg carol are you coming on Friday?")
    carol.wait(
        lambda: "are you coming on Friday?" in carol.lines("#transcript li.whisper"), "carol's whisper"
    )
    carol.say("/msg ann yes, with cake")
    ann.wait(lambda: "yes, with cake" in ann.lines("#transcript li.whisper"), "the answer")
    ann.say("/me waves at everyone")
    said = bob.expect(
        codec.MessagePacket, lambda m: m.sender == "ann" and m.action is None and "waves" in m.text
    )
    assert said.text == "* waves at everyone"
    ann.wait(lambda: "* ann waves at everyone" in ann.lines("#transcript li.me-action"), "the action")

    # -- conversations: a reply, reactions, an edit, typing -------------------------------------
    bob.send(codec.Say("I'll bring **plates**", "p", "general", heard.seq))
    bob.expect(codec.MessagePacket, lambda m: m.ref == "p")
    bob.send(codec.React("general", heard.seq, "🎉", ref="r"))
    bob.expect(codec.Changed, lambda c: c.ref == "r")
    ann.wait(lambda: ann.all("#transcript li .quote"), "bob's reply, quoting ann")
    ann.wait(lambda: ann.all("#transcript .reaction"), "bob's reaction")
    ann.find("#transcript .reaction").click()  # ann's too
    ann.wait(lambda: ann.all("#transcript .reaction.mine"), "ann's reaction")
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(ann.here()).move_to_element(ann.find("#message-input")).perform()  # no hover in the pictures
    from selenium.webdriver.common.keys import Keys

    ann.find("#message-input").send_keys(Keys.ARROW_UP)  # edits her last message: the /me
    ann.wait(lambda: ann.find("#compose-bar").is_displayed(), "editing")
    ann.say(" and bob")
    edited = bob.expect(codec.Changed, lambda c: c.kind == "edit")
    assert edited.message.text == "* waves at everyone and bob"
    ann.wait(lambda: ann.all("#transcript li.me-action .edited"), "(edited)")
    bob.send(codec.Typing("general"))
    ann.wait(lambda: ann.find("#typing").text == "bob is typing…", "bob typing")
    bob.send(codec.Say("ann: could you set den's topic?", None, "den"))
    ann.wait(lambda: ann.all("#room-list li[data-room=den] .mention-badge"), "a mention badge on den")
    script.step(ann, "whispers-and-me", readme="desktop")
    show_room(ann, "den")
    show_room(ann, "general")
    assert ann.lines("#transcript li.whisper") == ["are you coming on Friday?", "yes, with cake"], "kept"
    show_room(ann, "den")

    # -- an operator's member menu and room dialog ----------------------------------------------------
    member_menu(ann, "bob")
    script.step(ann, "member-menu")
    act(ann, "whisper")  # closes the menu, and starts a /msg to bob in the box
    ann.wait(lambda: ann.find("#message-input").get_attribute("value") == "/msg bob ", "the whisper begun")
    ann.say("thanks for coming")
    assert bob.expect(codec.Private).text == "thanks for coming"
    member_menu(ann, "bob")
    act(ann, "op")
    ann.wait(lambda: "@bob" in ann.lines("#member-list li"), "@bob")
    act(ann, "deop")
    ann.wait(lambda: "bob" in ann.lines("#member-list li"), "bob no longer an operator")
    ann.find("#member-reason").send_keys("a test kick")
    act(ann, "kick")
    bob.expect(codec.Left, lambda p: p.nick == "bob" and p.room == "den")
    ann.wait(lambda: "bob was kicked: a test kick" in ann.lines("#transcript li.presence"), "the kick")
    close_dialog(ann, "#member-dialog")
    bob.send(codec.Join("den"))
    bob.expect(codec.RoomState, lambda r: r.room == "den")
    member_menu(ann, "bob")
    act(ann, "ban")
    bob.expect(codec.Left, lambda p: p.nick == "bob" and p.room == "den")
    close_dialog(ann, "#member-dialog")
    open_dialog(ann, "#room-button", "#room-dialog")
    ann.wait(lambda: "bob" in ann.find("#room-bans").text, "the ban list")
    ann.find("#room-topic-input").clear()
    ann.find("#room-topic-input").send_keys("Friday's demo")
    ann.find("#room-topic-set").click()
    ann.wait(lambda: ann.find("#room-topic").text == "Friday's demo", "the topic")
    ann.find("#room-topic-lock").click()
    ann.find("#room-invite-only").click()
    ann.find("#room-modes-apply").click()
    ann.wait(
        lambda: ann.js("const r = window.chatApp.room(); return r.topicLock && r.inviteOnly"), "the modes"
    )
    script.step(ann, "room-dialog")
    ann.find("#room-bans button").click()
    ann.wait(lambda: ann.find("#room-bans").text == "nobody", "bob unbanned")
    ann.find("#room-nick").send_keys("mallory")  # a ban by nick, of someone not here
    ann.find("#room-ban").click()
    ann.wait(lambda: "mallory" in ann.find("#room-bans").text, "mallory banned")
    ann.find("#room-bans button").click()
    ann.wait(lambda: ann.find("#room-bans").text == "nobody", "mallory unbanned")
    ann.find("#room-nick").clear()
    ann.find("#room-nick").send_keys("bob")
    ann.find("#room-invite").click()
    assert bob.expect(codec.Invited).room == "den"
    close_dialog(ann, "#room-dialog")
    bob.send(codec.Join("den"))
    bob.expect(codec.RoomState, lambda r: r.room == "den")
    for command in ("/op bob", "/deop bob", "/kick bob bye for now"):
        ann.say(command)
    bob.expect(codec.Left, lambda p: p.nick == "bob" and p.room == "den")
    ann.say("/invite bob")
    bob.expect(codec.Invited)
    bob.send(codec.Join("den"))
    bob.expect(codec.RoomState, lambda r: r.room == "den")
    ann.say("/ban bob")
    bob.expect(codec.Left, lambda p: p.nick == "bob" and p.room == "den")
    ann.say("/unban bob")
    ann.wait(lambda: any("unbanned bob" in t for t in ann.lines("#transcript li.record")), "/unban")
    ann.say("/invite bob")
    bob.expect(codec.Invited)
    bob.send(codec.Join("den"))
    bob.expect(codec.RoomState, lambda r: r.room == "den")
    ann.wait(lambda: "bob" in ann.lines("#member-list li"), "bob back in den")
    script.step(ann, "moderated")

    # -- the account dialog ------------------------------------------------------------------
    open_dialog(ann, "#account-button", "#account-dialog")
    ann.find("#change-current").send_keys(PASSWORD)
    ann.find("#change-new").send_keys(NEW_PASSWORD)
    ann.find("#change-confirm").send_keys(NEW_PASSWORD)
    ann.find("#change-button").click()
    ann.wait(lambda: result(ann, "#account-dialog") == "Your password is changed.", "the password changed")
    script.step(ann, "account-dialog")
    close_dialog(ann, "#account-dialog")
    ann.find("#notify-button").click()
    ann.wait(lambda: any(t.startswith("Notifications:") for t in ann.lines("#transcript li.notice")), "asked")

    # -- an admin's dialog, in a third tab ------------------------------------------------------
    root = script.open(server.url)
    root.log_in("root", PASSWORD)
    root.say("/join scratch")
    root.wait(lambda: root.current_room() == "scratch", "scratch")
    mallory = TcpPeer(server.port, "mallory")
    mallory.send(codec.Join("scratch"))
    mallory.expect(codec.RoomState)
    member_menu(root, "mallory")
    assert root.find("#member-dialog [data-act=server-kick]").is_displayed(), "an admin's actions"
    script.step(root, "admin-member-menu")
    act(root, "server-kick")
    assert mallory.expect(codec.Bye).reason == "kicked"
    mallory.close()
    root.wait(lambda: "mallory was kicked" in " ".join(root.lines("#transcript li")), "mallory gone")
    close_dialog(root, "#member-dialog")
    open_dialog(root, "#admin-button", "#admin-dialog")
    root.wait(lambda: "bob" in root.find("#admin-sessions").text, "the sessions list")
    root.find("#admin-target").send_keys("203.0.113.0/24")
    root.find("#admin-duration").send_keys("60")
    root.find("#admin-ban-address").click()
    root.wait(lambda: "203.0.113.0/24" in root.find("#admin-bans").text, "the address ban listed")
    root.find("#admin-target").clear()
    root.find("#admin-target").send_keys("mallory")
    root.find("#admin-reason").send_keys("spam")
    root.find("#admin-ban").click()
    root.wait(lambda: "mallory (by root: spam" in root.find("#admin-bans").text, "the nick ban listed")
    script.step(root, "admin-dialog")
    for left in (1, 0):
        root.find("#admin-bans button").click()
        root.wait(lambda n=left: len(root.all("#admin-bans button")) == n, "a ban lifted")
    root.wait(lambda: root.find("#admin-bans").text == "nobody is banned", "every ban lifted")
    root.find("#admin-room").send_keys("scratch")
    root.find("#admin-close").click()
    root.wait(lambda: "scratch" not in root.lines("#room-list .room-name"), "scratch closed")
    root.find("#admin-reset-nick").send_keys("dave")
    root.find("#admin-reset-password").send_keys("a new one for dave")
    root.find("#admin-reset").click()
    root.wait(lambda: "reset dave" in result(root, "#admin-dialog"), "dave's password reset")
    dave = TcpPeer(server.port, "dave", "a new one for dave")  # the reset password works
    dave.close()
    mallory = TcpPeer(server.port, "mallory")
    root.find("#admin-refresh").click()
    root.wait(lambda: "mallory" in root.find("#admin-sessions").text, "mallory listed")
    root.find("#admin-target").clear()
    root.find("#admin-target").send_keys("mallory")
    root.find("#admin-kick").click()
    assert mallory.expect(codec.Bye).reason == "kicked"
    mallory.close()
    close_dialog(root, "#admin-dialog")
    root.find("#account-button").click()
    root.wait(lambda: root.js("return document.getElementById('account-dialog').open"), "root's account")
    root.find("#logout-button").click()
    root.wait(lambda: root.find("#login-view").is_displayed(), "root logged out")

    # -- phone width, then a large window ---------------------------------------------------------
    driver = script.driver
    show_room(ann, "general")
    driver.set_window_size(390, 800)
    ann.wait(lambda: not ann.find("#rooms-pane").is_displayed(), "the panes folded")
    ann.wait(lambda: ann.find("#message-input").is_displayed(), "the box still there")
    script.step(ann, "phone", readme="phone")
    ann.find("#toggle-rooms").click()
    ann.wait(lambda: ann.find("#rooms-pane").is_displayed(), "the rooms pane")
    script.step(ann, "phone-rooms")
    show_room(ann, "den")
    ann.find("#toggle-members").click()
    ann.wait(lambda: ann.find("#members-pane").is_displayed(), "the members pane")
    member_menu(ann, "bob")
    script.step(ann, "phone-member-menu")
    close_dialog(ann, "#member-dialog")
    ann.find("#toggle-members").click()
    ann.wait(lambda: not ann.find("#members-pane").is_displayed(), "the members pane folded")
    driver.set_window_size(1600, 1000)
    ann.wait(lambda: ann.find("#rooms-pane").is_displayed(), "the panes back")
    script.step(ann, "large")
    driver.set_window_size(1100, 720)

    # -- the server dies (kill -9) and comes back ---------------------------------------------------
    script.outage = True
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(20)
    bob.close()
    ann.wait(lambda: any(t.startswith("connection lost") for t in ann.lines("#transcript li.status")), "lost")
    script.step(ann, "connection-lost")
    ports = (server.port, server.web_port, server.irc_port)
    server.start(*(f"tcp:{port}:interface=127.0.0.1" for port in ports))
    bob = TcpPeer(server.port, "bob")
    bob.send(codec.Join("den"))
    bob.expect(codec.RoomState)
    for n in range(3):
        bob.send(codec.Say(f"said during the outage {n}", None, "den"))
    bob.expect(codec.MessagePacket, lambda m: m.text == "said during the outage 2")
    ann.wait(lambda: ann.state() == "connected", "ann back")
    ann.wait(lambda: any(t.startswith("reconnected (") for t in ann.lines("#transcript li.status")), "back")
    ann.wait(lambda: "said during the outage 2" in ann.lines("#transcript li.message"), "caught up")
    texts = ann.lines("#transcript li.message")
    assert [t for t in texts if t.startswith("said during")] == [
        f"said during the outage {n}" for n in range(3)
    ]
    marker = [t for t in ann.lines("#transcript li.status") if t.startswith("reconnected")][-1]
    assert re.fullmatch(r"reconnected \(\d+ missed messages? fetched\)", marker)
    carol.wait(lambda: carol.state() == "connected", "carol back")
    script.step(ann, "reconnected")
    script.outage = False

    # -- reloads -----------------------------------------------------------------------------------
    carol.here().refresh()
    carol.wait(lambda: carol.state() == "connected", "carol, a guest, still logged in after a reload")
    assert carol.js("return window.chatApp.session.nick") == "carol"
    script.step(carol, "guest-reloaded")
    open_dialog(carol, "#account-button", "#account-dialog")
    carol.find("#register-password").send_keys(PASSWORD)
    carol.find("#register-confirm").send_keys(PASSWORD)
    carol.find("#register-button").click()
    carol.wait(
        lambda: result(carol, "#account-dialog") == "carol is now registered to you.", "carol registered"
    )
    carol.wait(lambda: carol.find("#account-delete").is_displayed(), "an account's choices")
    carol.find("#delete-password").send_keys(PASSWORD)
    carol.find("#delete-sure").click()
    carol.find("#delete-button").click()
    carol.wait(lambda: "deleted" in result(carol, "#account-dialog"), "carol's account deleted")
    script.step(carol, "account-deleted")
    close_dialog(carol, "#account-dialog")
    ann.here().refresh()
    # A reload ends the session with its socket; the tab's resume token opens it again.
    ann.wait(lambda: ann.state() == "connected", "ann back in, not asked for the password")
    script.step(ann, "account-reloaded")
    ann.wait(lambda: sorted(ann.lines("#room-list .room-name")) == ["den", "general"], "her rooms")

    # -- leaving, quitting, logging out -------------------------------------------------------------
    show_room(ann, "den")
    ann.find("#leave-button").click()
    ann.wait(lambda: ann.lines("#room-list .room-name") == ["general"], "den left")
    ann.wait(lambda: ann.current_room() == "general", "general shown")
    carol.say("/quit")
    carol.wait(lambda: carol.find("#login-view").is_displayed(), "carol quit")
    ann.wait(
        lambda: any(t.startswith("carol quit") for t in ann.lines("#transcript li.presence")), "carol's quit"
    )
    open_dialog(ann, "#account-button", "#account-dialog")
    ann.find("#logout-button").click()
    ann.wait(lambda: ann.find("#login-view").is_displayed(), "logged out")
    assert ann.js("return sessionStorage.getItem('chat.tab')") is None, "nothing left to resume"
    script.step(ann, "logged-out")
    script.check()
    return bob


@pytest.mark.parametrize(
    "fault",
    [
        "console.error('boom')",
        "console.warn('careful')",
        "document.body.setAttribute('style', 'color: red')",  # a CSP violation
        "setTimeout(() => { throw new Error('thrown') }, 0)",
        "Promise.reject(new Error('nobody catches this'))",
    ],
)
def test_the_script_fails_on_a_console_error(driver, server, fault):
    """The checks the end-to-end script makes at each step can fail."""
    script = Script(driver, shots=False)
    console_errors(driver)
    page = script.open(server.url)
    try:
        page.wait(lambda: page.find("#login-form").is_displayed(), "the page")
        script.check()  # a clean page passes
        page.js(fault)

        def failed() -> str | None:
            try:
                script.check()
            except AssertionError as e:
                return str(e)
            return None

        assert "the page logged errors" in page.wait(failed, "the check to fail")
    finally:
        page.close()
        driver.switch_to.window(driver.window_handles[0])
        console_errors(driver)
