"""The desktop client's operator and admin windows against a real in-process
server on 127.0.0.1, driven through their menus, buttons and confirmations:
the connections window (one, shown, asking the server gently), the admin's
actions, the ban list table, room settings and the member menu."""

from __future__ import annotations

import itertools
import time

import pytest
import pytest_twisted
from PyQt6.QtCore import Qt
from PyQt6.QtWidgets import QDialog
from test_accounts_ui import PASSWORD, account, set_up_admin
from test_client import log_in, other
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol
from waiting import member_of, signal_fired, until

from chatproto import codec
from qtclient.views.moderation import AdminDialog, BanListDialog
from qtclient.views.room_settings import RoomModes, RoomSettingsDialog


def click(qtbot, widget) -> None:
    qtbot.mouseClick(widget, Qt.MouseButton.LeftButton)


def click_row(qtbot, view, column_text: str) -> None:
    """A click on the row whose first cell reads ``column_text``."""
    model = view.model()
    rows = [row for row in range(model.rowCount()) if model.index(row, 0).data() == column_text]
    assert rows, f"{column_text!r} not in {[model.index(r, 0).data() for r in range(model.rowCount())]}"
    rect = view.visualRect(model.index(rows[0], 0))
    qtbot.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=rect.center())


def confirm(qtbot, dialog, **fields) -> None:
    """Fill the open confirmation's fields as typed, and press its button."""
    confirmation = dialog.confirmation
    assert confirmation is not None and confirmation.isVisible()
    for name, text in fields.items():
        confirmation.fields[name].clear()
        qtbot.keyClicks(confirmation.fields[name], text)
    click(qtbot, confirmation.ok_button)


@pytest_twisted.inlineCallbacks
def admin(window, server, sessions):
    """alice: the admin account the server made at start, whose one-time
    password (from the log) her first session changes; then the window logs
    in with the new one."""
    yield set_up_admin(server, sessions)
    welcome = yield account(window, server, register=False)
    assert welcome.admin
    return welcome


@pytest_twisted.inlineCallbacks
def in_room(window, room: str):
    joined = signal_fired(window.session.roomJoined, lambda state, reset: state.room == room)
    window.submit(f"/join {room}")
    (state, _) = yield joined
    return state


def spy_requests(monkeypatch, session) -> list[tuple[str, float]]:
    """The ADMIN ops the session is asked to send, in order, with when."""
    asked: list[tuple[str, float]] = []
    real = session.administer

    def administer(op, **fields):
        asked.append((op, time.monotonic()))
        return real(op, **fields)

    monkeypatch.setattr(session, "administer", administer)
    return asked


# -- the connections window -------------------------------------------------------------


@pytest.mark.server(admins=("alice",))
@pytest_twisted.inlineCallbacks
def test_the_connections_window_opens_once_and_asks_the_server_gently(
    window, server, sessions, reactor, monkeypatch
):
    yield admin(window, server, sessions)
    asked = spy_requests(monkeypatch, window.session)
    errors = []
    window.session.errorReceived.connect(lambda code, message: errors.append(code))
    window.admin_action.trigger()
    window.admin_action.trigger()
    dialog = window.dialogs.keeper.get("admin")
    assert isinstance(dialog, AdminDialog) and dialog.isVisible(), "the menu item shows the window"
    assert [w for w in window.findChildren(AdminDialog) if w.isVisible()] == [dialog], "one, raised again"
    yield until(lambda: dialog.texts(dialog.connected) == ["alice (account)"])
    assert [op for op, _ in asked] == ["bans", "sessions"], "asked for once on opening"

    raw = []
    for _ in range(6):
        raw.append((yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", server.port), Protocol())))
    yield until(lambda: len(dialog.texts(dialog.pending)) == 6)
    refreshes = [when for op, when in asked if op == "sessions"]
    assert len(refreshes) <= 3, "six PENDINGs: not six requests"
    assert all(b - a >= dialog.every - 0.01 for a, b in itertools.pairwise(refreshes)), "spaced out"
    assert dialog.every == 2.0, "half the server's rate of one a second"
    assert "rate_limited" not in errors

    dialog.close()
    assert window.dialogs.keeper.get("admin") is None
    for protocol in raw:
        protocol.transport.loseConnection()
    yield until(lambda: window.peers.pending_ids() == [])
    assert len([op for op, _ in asked if op == "sessions"]) == len(refreshes), "a closed window asks nothing"
    again = window.dialogs.open_admin()
    assert again is not dialog and again.isVisible()
    yield until(lambda: again.texts(again.pending) == [] and again.texts(again.connected) != [])
    window.close()
    assert not again.isVisible(), "the admin window goes with the main window"


@pytest.mark.server(admins=("alice",), join_rate=5.0, join_burst=30)
@pytest_twisted.inlineCallbacks
def test_an_admin_kicks_bans_unbans_and_resets_from_the_connections_window(window, server, sessions, qtbot):
    yield admin(window, server, sessions)
    bob = yield other(sessions, server, "bob")
    carol = yield other(sessions, server, "carol")
    dave = sessions()
    registered = signal_fired(dave.requestDone, lambda done: done.op == "register")
    dave.connect_to("127.0.0.1", server.port, "dave", password=PASSWORD, register=True)
    yield registered
    window.admin_action.trigger()
    dialog = window.dialogs.keeper.get("admin")
    yield until(lambda: len(dialog.texts(dialog.connected)) == 4)
    assert not dialog.kick_button.isEnabled(), "nothing selected, nothing to act on"

    kicked = signal_fired(bob.errorReceived, lambda code, message: code == "bye")
    click_row(qtbot, dialog.connected_view, "bob")
    listed = signal_fired(window.session.sessionsListed)
    click(qtbot, dialog.refresh_button)
    yield listed
    assert dialog.selected_session().nick == "bob", "a refresh keeps the row selected"
    click(qtbot, dialog.kick_button)
    confirm(qtbot, dialog, reason="enough")
    (_, said) = yield kicked
    assert "kicked" in said
    yield until(lambda: dialog.outcome.text() == "Done: kick bob")
    yield until(lambda: "bob" not in dialog.texts(dialog.connected))

    banned = signal_fired(carol.errorReceived, lambda code, message: code == "bye")
    click_row(qtbot, dialog.connected_view, "carol")
    click(qtbot, dialog.ban_button)
    confirm(qtbot, dialog, reason="spam", hours="1")
    yield banned
    yield until(lambda: dialog.texts(dialog.bans) == ["carol"])
    assert dialog.outcome.text() == "Done: ban carol"
    assert dialog.texts(dialog.bans, 4) == ["spam"] and dialog.texts(dialog.bans, 3) != ["until lifted"]
    refused = sessions()
    refused_login = signal_fired(refused.errorReceived, lambda code, message: code == "banned")
    refused.connect_to("127.0.0.1", server.port, "carol")
    yield refused_login

    click_row(qtbot, dialog.bans_view, "carol")
    click(qtbot, dialog.unban_button)
    confirm(qtbot, dialog)
    yield until(lambda: dialog.texts(dialog.bans) == [])
    assert dialog.outcome.text() == "Done: unban carol"
    back = sessions()
    welcomed = signal_fired(back.welcomed)
    back.connect_to("127.0.0.1", server.port, "carol")
    yield welcomed

    click_row(qtbot, dialog.connected_view, "dave (account)")
    click(qtbot, dialog.reset_button)
    confirm(qtbot, dialog, password="short")
    assert "at least 8" in dialog.confirmation.error.text(), "checked before it goes"
    confirm(qtbot, dialog, password="battery staple")
    yield until(lambda: dialog.outcome.text() == "Done: reset dave")
    desk = sessions()
    welcomed = signal_fired(desk.welcomed)
    desk.connect_to("127.0.0.1", server.port, "dave", password="battery staple")
    (welcome,) = yield welcomed
    assert welcome.account

    yield until(lambda: "carol" in dialog.texts(dialog.connected))
    click_row(qtbot, dialog.connected_view, "carol")
    click(qtbot, dialog.reset_button)
    confirm(qtbot, dialog, password="battery staple")
    yield until(lambda: dialog.outcome.text().startswith("Refused (no_such_account)"))


@pytest.mark.server(admins=("alice",), join_rate=5.0, join_burst=30)
@pytest_twisted.inlineCallbacks
def test_an_admin_bans_a_network_lifts_it_and_closes_a_room(window, server, sessions, qtbot):
    yield admin(window, server, sessions)
    bob = yield other(sessions, server, "bob")
    yield member_of(bob, "den")
    dialog = window.dialogs.open_admin()
    yield until(lambda: "bob" in dialog.texts(dialog.connected))
    click_row(qtbot, dialog.connected_view, "bob")
    click(qtbot, dialog.ban_address_button)
    assert dialog.confirmation.fields["address"].text() == "127.0.0.1", "the selected session's address"
    confirm(qtbot, dialog, address="not an address")
    assert dialog.outcome.text().startswith("Not sent"), "refused here, not by the server"
    click(qtbot, dialog.ban_address_button)
    confirm(qtbot, dialog, address="203.0.113.0/24", hours="nan")
    assert dialog.outcome.text().startswith("Not sent: the number of hours")
    click(qtbot, dialog.ban_address_button)
    confirm(qtbot, dialog, address="203.0.113.0/24", reason="scanners")
    yield until(lambda: dialog.texts(dialog.bans) == ["203.0.113.0/24"])
    assert dialog.outcome.text() == "Done: ban address 203.0.113.0/24"
    assert server.hub.gate.bans, "the server holds the ban"
    click_row(qtbot, dialog.bans_view, "203.0.113.0/24")
    click(qtbot, dialog.unban_button)
    assert "address 203.0.113.0/24" in dialog.confirmation.findChild(type(dialog.outcome)).text()
    confirm(qtbot, dialog)
    yield until(lambda: dialog.texts(dialog.bans) == [])
    assert dialog.outcome.text() == "Done: unban address 203.0.113.0/24" and not server.hub.gate.bans

    closed = signal_fired(bob.roomLeft, lambda left: left.room == "den")
    click(qtbot, dialog.close_room_button)
    confirm(qtbot, dialog, room="den")
    (left,) = yield closed
    assert left.reason == "closed"
    yield until(lambda: dialog.outcome.text() == "Done: close den")


# -- room windows -----------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_the_ban_list_is_one_table_per_room_that_fits_its_text(window, server, sessions, qtbot):
    yield log_in(window, server)
    yield in_room(window, "den")
    bob = yield other(sessions, server, "bob")
    reason = "posting the same link forty times in a row after being asked to stop"
    kicked = signal_fired(bob.roomLeft, lambda left: left.room == "den")
    yield member_of(bob, "den")
    window.submit(f"/ban bob {reason}")
    yield kicked
    window.bans_action.trigger()
    window.bans_action.trigger()
    dialog = window.dialogs.keeper.get(("bans", "den"))
    assert isinstance(dialog, BanListDialog) and dialog.isVisible()
    assert [w for w in window.findChildren(BanListDialog) if w.isVisible()] == [dialog], "one per room"
    yield until(lambda: dialog.nicks() == ["bob"])
    assert [dialog.model.item(0, c).text() for c in (1, 4)] == ["alice", reason]
    header = dialog.view.horizontalHeader()
    assert header.sectionSize(4) >= dialog.view.fontMetrics().horizontalAdvance(reason), "the reason is whole"
    yield until(lambda: dialog.view.horizontalScrollBar().maximum() == 0)
    assert header.length() <= dialog.view.viewport().width(), "every column in view"

    assert not dialog.unban_button.isEnabled()
    click_row(qtbot, dialog.view, "bob")
    click(qtbot, dialog.unban_button)
    yield until(lambda: dialog.nicks() == [])
    assert dialog.outcome.text() == "Done: unbanned bob"
    yield member_of(bob, "den")


@pytest_twisted.inlineCallbacks
def test_room_settings_set_modes_invite_and_open_the_ban_list(window, server, sessions, qtbot):
    yield log_in(window, server)
    state = yield in_room(window, "den")
    assert (state.invite_only, state.topic_lock) == (False, False)
    bob = yield other(sessions, server, "bob")
    window.dialogs.settings_action.trigger()
    dialog = window.dialogs.keeper.get(("settings", "den"))
    assert isinstance(dialog, RoomSettingsDialog) and dialog.isVisible()
    assert dialog.current.text() == "Now: open to everyone, anyone may set the topic."

    click(qtbot, dialog.invite_only)
    click(qtbot, dialog.topic_lock)
    click(qtbot, dialog.apply_button)
    yield until(lambda: dialog.outcome.text().startswith("Done: "))
    assert dialog.current.text() == "Now: invite-only, topic set by operators only."
    refused = signal_fired(bob.errorReceived, lambda code, message: code == "invite_only")
    bob.join("den")
    yield refused

    invited = signal_fired(bob.invitedTo)
    qtbot.keyClicks(dialog.invitee, "bob")
    click(qtbot, dialog.invite_button)
    (invitation,) = yield invited
    assert (invitation.room, invitation.by) == ("den", "alice")
    yield until(lambda: dialog.outcome.text() == "Done: invited bob")
    yield member_of(bob, "den")
    locked = signal_fired(bob.errorReceived, lambda code, message: code == "topic_locked")
    bob.set_topic("den", "mine now")
    yield locked

    click(qtbot, dialog.apply_button)
    assert dialog.outcome.text().startswith("Nothing to apply"), "the modes as they are: nothing sent"
    keyed = signal_fired(bob.messageReceived, lambda m: (m.action or {}).get("op") == "mode")
    qtbot.keyClicks(dialog.key, "sesame")
    click(qtbot, dialog.apply_button)
    (record,) = yield keyed
    assert set(record.action) == {"op", "key"}, "only what was changed: another's modes stay"

    qtbot.keyClicks(dialog.invitee, "no spaces")
    click(qtbot, dialog.invite_button)
    assert dialog.outcome.text().startswith("Not sent"), "a bad nick is refused here"

    click(qtbot, dialog.bans_button)
    bans = window.dialogs.keeper.get(("bans", "den"))
    assert bans is not None and bans.isVisible()
    click(qtbot, dialog.bans_button)
    assert window.dialogs.keeper.get(("bans", "den")) is bans
    window.dialogs.settings_action.trigger()
    assert window.dialogs.keeper.get(("settings", "den")) is dialog
    yield window.session.disconnect()
    assert not window.dialogs.settings_action.isEnabled()
    click(qtbot, dialog.moderated)
    click(qtbot, dialog.apply_button)
    assert dialog.outcome.text().startswith("Not sent: not connected"), "offline: said in the window"


def test_room_settings_say_when_the_server_sent_no_modes(qtbot, sessions):
    session = sessions()
    modes = RoomModes(session)
    session.roomJoined.emit(codec.RoomState("old", "", [], []), False)
    dialog = RoomSettingsDialog(session, "old", modes, is_operator=False, open_bans=lambda room: None)
    qtbot.addWidget(dialog)
    assert modes.get("old") is None
    assert "not said" in dialog.current.text()
    texts = [label.text() for label in dialog.findChildren(type(dialog.current))]
    assert any("not an operator" in text for text in texts)
    dialog.close()
    assert dialog.result() == QDialog.DialogCode.Rejected


@pytest_twisted.inlineCallbacks
def test_the_member_menu_offers_only_what_applies(window, server, sessions):
    yield log_in(window, server)
    yield in_room(window, "den")
    bob = yield other(sessions, server, "bob")
    yield member_of(bob, "den")
    yield until(lambda: window.peers.members("den") == ["alice", "bob"])
    branch = window.peers.rooms["den"]

    def offered(row: int) -> list[str]:
        menu = window.member_menu(branch.item.child(row).index())
        return [a.text() for a in menu.actions() if not a.isSeparator()]

    assert offered(1) == ["Message bob…", "Kick bob", "Ban bob", "Make operator bob", "Give voice to bob"]
    assert offered(0) == ["Remove operator alice", "Give voice to alice"], "no kicking yourself"
    made_op = signal_fired(bob.messageReceived, lambda m: (m.action or {}).get("op") == "op")
    next(
        a for a in window.member_menu(branch.item.child(1).index()).actions() if "Make" in a.text()
    ).trigger()
    yield made_op
    yield until(lambda: branch.item.child(1).text() == "@bob")
    assert offered(1) == ["Message bob…", "Kick bob", "Ban bob", "Remove operator bob", "Give voice to bob"]


@pytest_twisted.inlineCallbacks
def test_the_member_menu_gives_and_takes_voice_and_the_list_marks_it(window, server, sessions):
    yield log_in(window, server)
    yield in_room(window, "den")
    bob = yield other(sessions, server, "bob")
    yield member_of(bob, "den")
    yield until(lambda: window.peers.members("den") == ["alice", "bob"])
    branch = window.peers.rooms["den"]

    def choose(words: str) -> None:
        menu = window.member_menu(branch.item.child(1).index())
        next(a for a in menu.actions() if a.text() == words).trigger()

    voiced = signal_fired(bob.messageReceived, lambda m: (m.action or {}).get("op") == "voice")
    choose("Give voice to bob")
    yield voiced
    yield until(lambda: branch.item.child(1).text() == "+bob")
    devoiced = signal_fired(bob.messageReceived, lambda m: (m.action or {}).get("op") == "devoice")
    choose("Take voice from bob")
    yield devoiced
    yield until(lambda: branch.item.child(1).text() == "bob")


@pytest_twisted.inlineCallbacks
def test_room_settings_set_moderated_secret_key_and_limit(window, server, sessions, qtbot):
    yield log_in(window, server)
    state = yield in_room(window, "den")
    assert (state.moderated, state.secret, state.key, state.limit) == (False, False, "", 0)
    bob = yield other(sessions, server, "bob")
    window.dialogs.settings_action.trigger()
    dialog = window.dialogs.keeper.get(("settings", "den"))
    assert isinstance(dialog, RoomSettingsDialog)

    qtbot.keyClicks(dialog.key, "no way")
    click(qtbot, dialog.apply_button)
    assert dialog.outcome.text().startswith("Not sent"), "a key with a space is refused here"
    dialog.key.clear()
    click(qtbot, dialog.moderated)
    click(qtbot, dialog.secret)
    qtbot.keyClicks(dialog.key, "sesame")
    dialog.limit.setValue(2)
    click(qtbot, dialog.apply_button)
    yield until(lambda: dialog.outcome.text().startswith("Done: "))
    assert dialog.current.text() == (
        "Now: open to everyone, anyone may set the topic, moderated: only voiced members and operators"
        " speak, secret: not listed, key 'sesame', at most 2 members."
    )
    asked = signal_fired(bob.keyNeeded)
    bob.join("den")
    (room, why) = yield asked
    assert room == "den" and "key" in why
    (state, _) = yield member_of(bob, "den", "sesame")
    assert (state.moderated, state.secret, state.key, state.limit) == (True, True, "sesame", 2)
    refused = signal_fired(bob.sendFailed)
    bob.say("may I?", "den")
    (_, why) = yield refused
    assert why == "'den' is moderated: only voiced members and operators may speak"
    carol = yield other(sessions, server, "carol")
    full = signal_fired(carol.errorReceived, lambda code, message: code == "room_full")
    carol.join("den", "sesame")
    yield full


@pytest_twisted.inlineCallbacks
def test_a_join_refused_for_want_of_a_key_asks_for_it(window, server, sessions, qtbot):
    bob = yield other(sessions, server, "bob")
    yield member_of(bob, "vault")
    keyed = signal_fired(bob.messageReceived, lambda m: (m.action or {}).get("op") == "mode")
    bob.moderate("vault", "mode", key="sesame")
    yield keyed
    yield log_in(window, server)
    window.submit("/join vault")
    yield until(lambda: window.key_prompt is not None and window.key_prompt.isVisible())
    prompt = window.key_prompt
    assert prompt.labelText() == "vault has a key. Enter it to join:"
    prompt.setTextValue("wrong")
    prompt.accept()
    yield until(lambda: window.key_prompt is not prompt and window.key_prompt.isVisible())
    joined = signal_fired(window.session.roomJoined, lambda state, reset: state.room == "vault")
    window.key_prompt.setTextValue("sesame")
    window.key_prompt.accept()
    (state, _) = yield joined
    assert state.key == "sesame"


@pytest_twisted.inlineCallbacks
def test_being_kicked_says_so_in_the_banner_with_the_reason(window, server, sessions):
    yield log_in(window, server)
    bob = yield other(sessions, server, "bob")
    yield member_of(bob, "den")  # bob made it: its operator
    yield in_room(window, "den")
    out = signal_fired(window.session.roomLeft, lambda left: left.room == "den")
    bob.moderate("den", "kick", "alice", reason="enough")
    yield out
    yield until(lambda: window.banner.isVisible())
    assert window.banner.text() == "You were removed from den: enough"
    assert window.current != "den", "another room is shown"
