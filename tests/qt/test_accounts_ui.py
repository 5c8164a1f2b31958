"""The desktop client's accounts and moderation against a real in-process
server on 127.0.0.1: registering from the connect dialog, the password kept
out of QSettings, unread counts in step with the server's read markers,
operator actions from the member list and commands, and the ban list."""

from __future__ import annotations

import pytest
import pytest_twisted
from test_client import other
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from waiting import member_of, signal_fired, until

from qtclient.views.connect_dialog import ConnectDialog, Target

PASSWORD = "correct horse"


@pytest_twisted.inlineCallbacks
def account(window, server, nick="alice", register=True):
    """Logged in to an account (registered first if asked), in the default room."""
    in_room = signal_fired(window.session.roomJoined)
    done = signal_fired(window.session.requestDone) if register else None
    welcomed = signal_fired(window.session.welcomed)
    window.connect_to(Target("127.0.0.1", server.port, nick, password=PASSWORD, register=register))
    (welcome,) = yield welcomed
    yield in_room
    if done is not None:
        yield done
    return welcome


@pytest_twisted.inlineCallbacks
def set_up_admin(server, sessions, nick="alice"):
    """The server's operator sets up its admin: logs in with the one-time
    password the server made at start for --admin ``nick`` and changes it
    to PASSWORD (what the account dialog does), then leaves."""
    from chatproto.rules import nick_key

    yield server.hub.accounts.admins_checked  # made on the thread pool at start
    first = server.hub.accounts.setup_passwords[nick_key(nick)]
    session = sessions()
    welcomed = signal_fired(session.welcomed)
    session.connect_to("127.0.0.1", server.port, nick, password=first)
    (welcome,) = yield welcomed
    assert welcome.admin
    changed = signal_fired(session.requestDone, lambda done: done.op == "password")
    session.change_account("password", first, PASSWORD)
    yield changed
    yield session.disconnect()


def test_the_connect_dialog_never_puts_a_password_in_settings(qtbot, settings, tmp_path):
    dialog = ConnectDialog(None, settings)
    qtbot.addWidget(dialog)
    dialog.nick.setText("alice")
    dialog.password.setText(PASSWORD)
    dialog.register.setChecked(True)
    assert dialog.password_again.isVisibleTo(dialog), "registering asks for the password twice"
    dialog.password_again.setText(PASSWORD + "typo")
    dialog.accept()
    assert dialog.target is None and "differ" in dialog.error.text()
    dialog.password_again.setText(PASSWORD)
    dialog.remember.setChecked(dialog.remember.isEnabled())
    dialog.accept()
    assert dialog.target.password == PASSWORD and dialog.target.register
    assert PASSWORD not in repr(dialog.target)
    settings.sync()
    assert PASSWORD not in (tmp_path / "client.ini").read_text()
    short = ConnectDialog(None, settings)
    qtbot.addWidget(short)
    short.nick.setText("bob")
    short.password.setText("short")
    short.register.setChecked(True)
    short.password_again.setText("short")
    short.accept()
    assert short.target is None and "at least 8" in short.error.text()


@pytest_twisted.inlineCallbacks
def test_register_then_log_in_with_the_password(window, server, sessions):
    welcome = yield account(window, server)
    assert welcome.account is False and window.session.machine.account, "registered once logged in"
    intruder = sessions()
    refused = signal_fired(intruder.errorReceived, lambda code, message: code == "nick_registered")
    intruder.connect_to("127.0.0.1", server.port, "alice")
    yield refused
    wrong = sessions()
    bad = signal_fired(wrong.errorReceived, lambda code, message: code == "bad_password")
    wrong.connect_to("127.0.0.1", server.port, "alice", password="not the password")
    yield bad
    desk = sessions()
    welcomed = signal_fired(desk.welcomed)
    desk.connect_to("127.0.0.1", server.port, "alice", password=PASSWORD)
    (second,) = yield welcomed
    assert (second.account, second.id) == (True, welcome.id), "a second device of the same account"


@pytest_twisted.inlineCallbacks
def test_unread_counts_follow_the_servers_read_markers(window, server, sessions):
    yield account(window, server)
    joined = signal_fired(window.session.roomJoined, lambda state, reset: state.room == "side")
    window.submit("/join side")
    yield joined
    window.show_room("general")
    bob = yield other(sessions, server, "bob")
    yield member_of(bob, "side")
    for i in range(3):
        bob.say(f"m{i}", "side")
    yield until(lambda: window.peers.unread("side")[0] == 3)
    desk = sessions()
    desk_side = signal_fired(desk.roomJoined, lambda state, reset: state.room == "side")
    desk.connect_to("127.0.0.1", server.port, "alice", password=PASSWORD)
    (state, _) = yield desk_side
    assert state.unread == 3, "the server counts what is past the marker"
    desk.mark_read("side", state.history[-1].seq)
    yield until(lambda: window.peers.unread("side")[0] == 0)
    assert "side (2 members)" == window.peers.room_item("side").text(), (
        "read on the other device: read here too"
    )


@pytest_twisted.inlineCallbacks
def test_operator_actions_from_the_member_menu_commands_and_the_ban_list(window, server, sessions, qtbot):
    yield account(window, server)
    joined = signal_fired(window.session.roomJoined, lambda state, reset: state.room == "den")
    window.submit("/join den")
    yield joined
    bob = yield other(sessions, server, "bob")
    yield member_of(bob, "den")
    yield until(lambda: window.peers.members("den") == ["alice", "bob"])
    branch = window.peers.rooms["den"]
    assert branch.item.child(0).text() == "@alice (you)", "an operator is shown with @"
    bob_item = branch.item.child(1)
    menu = window.member_menu(bob_item.index())
    make = next(a for a in menu.actions() if a.text() == "Make operator bob")
    assert make.isEnabled(), "the room's maker is its operator"
    made_op = signal_fired(bob.messageReceived, lambda m: (m.action or {}).get("op") == "op")
    next(a for a in menu.actions() if a.text() == "Make operator bob").trigger()
    yield made_op
    yield until(lambda: branch.item.child(1).text() == "@bob")
    kicked = signal_fired(bob.roomLeft, lambda left: left.reason == "kicked")
    window.submit("/kick bob enough")
    (left,) = yield kicked
    assert left.message == "enough"
    yield until(lambda: any("alice kicked bob: enough" in line.text for line in window.transcript.lines))
    window.submit("/ban bob")
    yield until(lambda: any("alice banned bob" in line.text for line in window.transcript.lines))
    refused = signal_fired(bob.errorReceived, lambda code, message: code == "banned")
    bob.join("den")
    yield refused
    dialog = window.open_bans("den")
    assert dialog.isVisible()
    yield until(lambda: dialog.nicks() == ["bob"])
    assert dialog.model.item(0, 1).text() == "alice", "banned by"
    dialog.view.selectRow(0)
    dialog.unban_selected()
    yield until(lambda: dialog.nicks() == [])
    yield member_of(bob, "den")


@pytest.mark.server(admins=("alice",))
@pytest_twisted.inlineCallbacks
def test_an_admin_sees_the_servers_lists_over_the_protocol(window, server, sessions, reactor):
    yield set_up_admin(server, sessions)
    assert not window.admin_action.isEnabled(), "only an admin's login enables it"
    welcome = yield account(window, server, register=False)
    assert welcome.admin and window.admin_action.isEnabled()
    yield other(sessions, server, "bob")
    dialog = window.open_admin()
    assert dialog.isVisible()
    yield until(lambda: sorted(dialog.texts(dialog.connected)) == ["alice (account)", "bob"])
    assert dialog.texts(dialog.pending) == []
    silent = yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", server.port), Protocol())
    yield until(lambda: len(dialog.texts(dialog.pending)) == 1)
    assert dialog.texts(dialog.pending, 1)[0].startswith("127.0.0.1"), "the pending list, with its address"
    silent.transport.loseConnection()
    yield until(lambda: dialog.texts(dialog.pending) == [])
    window.close()
    assert not dialog.isVisible(), "the admin window goes with the main window"


@pytest_twisted.inlineCallbacks
def test_a_guest_is_refused_the_admin_lists(window, server, sessions):
    bob = yield other(sessions, server, "bob")
    refused = signal_fired(bob.errorReceived, lambda code, message: code == "not_admin")
    bob.administer("sessions")
    yield refused
