"""The desktop client's nick changes (protocol 15.11): /nick and Chat →
Change nick… for a guest, the new nick shown everywhere (own nick, title,
member lists, what others see), against a real in-process server."""

from __future__ import annotations

import pytest_twisted
from test_accounts_ui import account
from test_client import line_for, log_in, other
from waiting import signal_fired, until


def members(window, room):
    return sorted(window.peers.members(room))


@pytest_twisted.inlineCallbacks
def test_slash_nick_renames_us_everywhere_and_others_see_it(window, server, sessions):
    yield log_in(window, server)
    bob = yield other(sessions, server, "bob")
    yield until(lambda: members(window, "general") == ["alice", "bob"])
    bob_sees = signal_fired(bob.nickChanged, lambda renamed: renamed.nick == "alicia")
    window.submit("/nick alicia")
    (renamed,) = yield bob_sees
    assert (renamed.old, renamed.ref) == ("alice", None)
    yield until(lambda: window.session.nick == "alicia")
    assert window.input.toPlainText() == ""
    assert members(window, "general") == ["alicia", "bob"]
    assert "alicia" in window.windowTitle()
    assert "as alicia" in window.state_label.text()
    assert line_for(window, "you are now known as alicia") is not None
    assert window.session.machine.nick == "alicia", "a login again uses the new nick"
    seen = signal_fired(window.session.nickChanged, lambda renamed: renamed.nick == "bobby")
    bob.change_nick("bobby")
    yield seen
    assert members(window, "general") == ["alicia", "bobby"]
    assert line_for(window, "bob is now known as bobby") is not None
    said = signal_fired(bob.messageReceived, lambda m: m.text == "hi bobby")
    window.submit("hi bobby")
    (message,) = yield said
    assert message.sender == "alicia"


@pytest_twisted.inlineCallbacks
def test_a_refused_nick_is_said_and_changes_nothing(window, server, sessions):
    yield log_in(window, server)
    yield other(sessions, server, "bob")
    window.submit("/nick BOB")
    yield until(lambda: line_for(window, "can't change nick: nick 'bob' is taken") is not None)
    assert window.session.nick == "alice"
    assert window.banner.isHidden(), "not a login problem"
    window.submit("/nick")
    assert line_for(window, "usage: /nick NEWNICK") is not None
    window.submit("/nick my fox")
    assert line_for(window, "a nick has no spaces: /nick NEWNICK") is not None


@pytest_twisted.inlineCallbacks
def test_the_menu_entry_is_a_guests(window, server, sessions):
    yield log_in(window, server)
    assert window.nick_action.isEnabled()
    window.nick_action.trigger()
    dialog = window.nick_dialog
    assert dialog is not None and dialog.textValue() == "alice"
    dialog.setTextValue("ally")
    renamed = signal_fired(window.session.nickChanged)
    dialog.accept()
    yield renamed
    yield until(lambda: members(window, "general") == ["ally"])


@pytest_twisted.inlineCallbacks
def test_an_account_has_no_menu_entry(window, server, sessions):
    yield account(window, server, "alice")
    yield until(lambda: not window.nick_action.isEnabled())
    window.submit("/nick other")
    assert line_for(window, "an account's nick is its name: log in as another account instead") is not None


@pytest_twisted.inlineCallbacks
def test_the_host_console_shows_the_new_nick(qtbot, reactor):
    from test_console_and_app import Raw, tree_rows
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol

    from chatproto import codec
    from qtclient.views.console import ServerConsole

    console = ServerConsole(reactor, "tcp:0:interface=127.0.0.1")
    qtbot.addWidget(console)
    assert console.start()
    raw = yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", console.server.port), Raw())
    raw.send(codec.Login("eve", 2))
    raw.send(codec.Join("general"))
    yield until(lambda: [row[0] for row in tree_rows(console.connected)] == ["eve"])
    raw.send(codec.Nick("evelyn"))
    yield until(lambda: [row[0] for row in tree_rows(console.connected)] == ["evelyn"])
    room = console.rooms.topLevelItem(0)
    yield until(lambda: [room.child(i).text(0) for i in range(room.childCount())] == ["evelyn"])
    yield console.stop()
