"""The desktop client's rooms: the tree, a transcript per room, commands, the
join dialog, mentions, links and rejoining after a restart, against a real
in-process server on 127.0.0.1."""

from __future__ import annotations

import pytest_twisted
from PyQt6.QtCore import QPoint, Qt
from PyQt6.QtGui import QColor
from PyQt6.QtTest import QTest
from test_client import log_in, other, server_down
from waiting import signal_fired, until

from qtclient import models
from qtclient import session as states
from qtclient.views import transcript as transcript_view
from qtclient.views.join_dialog import JoinDialog


def texts_of(transcript) -> list[str]:
    transcript.flush()
    return [line.text for line in transcript.lines]


@pytest_twisted.inlineCallbacks
def joined(window, name: str):
    """/join NAME typed, and the room shown."""
    arrived = signal_fired(
        window.session.roomJoined, lambda state, reset: state.room.casefold() == name.casefold()
    )
    window.submit(f"/join {name}")
    (state, _reset) = yield arrived
    return state


@pytest_twisted.inlineCallbacks
def test_join_topic_list_and_part_from_the_input(window, server, sessions):
    yield log_in(window, server)
    bob = yield other(sessions, server, "bob")
    yield joined(window, "Side")
    assert window.peers.room_names() == ["general", "Side"]
    assert window.room_names[window.current] == "Side", "a room joined is shown"
    assert window.peers.members("Side") == ["alice"]
    bob_in = signal_fired(window.session.peerJoined, lambda j: j.room == "Side")
    bob.join("side")
    yield bob_in
    assert window.peers.members("Side") == ["alice", "bob"]
    assert window.peers.room_item("Side").text() == "Side (2 members)"
    bob.whisper("alice", "psst")
    yield until(lambda: any(line.kind == models.PRIVATE for line in window.transcript.lines))
    assert window.room_names[window.current] == "Side", "a whisper shows in the room in view"

    topic = signal_fired(bob.topicChanged)
    window.submit("/topic release on friday")
    (changed,) = yield topic
    assert (changed.room, changed.topic, changed.by) == ("Side", "release on friday", "alice")
    yield until(lambda: "release on friday" in window.topic_label.text())
    assert "alice set the topic: release on friday" in texts_of(window.transcript)

    listed = signal_fired(window.session.roomsListed)
    window.submit("/list")
    yield listed
    assert "  Side (2) — release on friday" in texts_of(window.transcript)
    assert "  general (2)" in texts_of(window.transcript)

    bob_sees = signal_fired(bob.peerLeft)
    window.submit("/part see you")
    (left,) = yield bob_sees
    assert (left.nick, left.reason, left.message, left.room) == ("alice", "part", "see you", "Side")
    yield until(lambda: window.peers.room_names() == ["general"])
    assert window.room_names[window.current] == "general"
    assert "you left Side" in texts_of(window.transcript)


@pytest_twisted.inlineCallbacks
def test_each_room_has_its_transcript_unread_count_and_mentions(window, server, sessions, monkeypatch):
    yield log_in(window, server)
    bob = yield other(sessions, server, "bob")
    yield joined(window, "side")
    assert window.room_names[window.current] == "side"
    alerts = []
    monkeypatch.setattr(window, "isActiveWindow", lambda: False)
    monkeypatch.setattr(
        "qtclient.views.main_window.QApplication.alert", lambda widget, ms=0: alerts.append(widget)
    )
    heard = signal_fired(window.session.messageReceived, lambda m: m.text.startswith("ping"))
    bob.say("just chatting")
    bob.say("ping ALICE, lunch?")
    yield heard
    general = window.transcripts["general"]
    yield until(lambda: "ping ALICE, lunch?" in texts_of(general))
    assert "just chatting" not in texts_of(window.transcript), "general's lines stay in general"
    assert window.peers.unread("general") == (2, True)
    item = window.peers.room_item("general")
    assert item.text() == "general (2 members) — 2 unread"
    assert item.font().bold() and item.foreground().color() == QColor("#c62828")
    assert alerts == [window], "a mention alerts the desktop when the window is not in front"
    mention = next(line for line in general.lines if line.text.startswith("ping"))
    assert (
        mention.mention and not next(line for line in general.lines if line.text == "just chatting").mention
    )
    row = general.lines.index(mention)
    assert general.data(general.index(row, 2), Qt.ItemDataRole.BackgroundRole) is not None

    window.peer_view.clicked.emit(item.index())
    assert window.room_names[window.current] == "general"
    assert window.transcript is general and window.transcript_view.model() is general
    assert window.peers.unread("general") == (0, False)
    assert item.text() == "general (2 members)"


@pytest_twisted.inlineCallbacks
def test_nick_colours_are_stable_and_links_open(window, server, sessions, monkeypatch):
    yield log_in(window, server)
    bob = yield other(sessions, server, "bob")
    heard = signal_fired(window.session.messageReceived)
    bob.say("the build: https://ci.example.org/run/42.")
    yield heard
    transcript = window.transcript
    yield until(lambda: any("://" in line.text for line in transcript.lines))
    row = next(i for i, line in enumerate(transcript.lines) if "://" in line.text)
    html = transcript.data(transcript.index(row, 2), models.HTML_ROLE)
    assert '<a href="https://ci.example.org/run/42">https://ci.example.org/run/42</a>.' in html
    colour = transcript.data(transcript.index(row, 1), Qt.ItemDataRole.ForegroundRole).color()
    assert colour == models.nick_colour("bob") == models.nick_colour("BOB")
    assert models.nick_colour("bob") != models.nick_colour("carol")
    opened = []
    monkeypatch.setattr("qtclient.views.main_window.QDesktopServices.openUrl", lambda url: opened.append(url))
    view = window.transcript_view
    rect = view.visualRect(transcript.index(row, 2))
    before = view.fontMetrics().horizontalAdvance("the build: ")
    y = rect.center().y()
    QTest.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=QPoint(rect.left() + 8, y))
    assert opened == []  # the words before it are not the link
    link = QPoint(rect.left() + transcript_view.PAD_X + before + 20, y)
    QTest.mouseClick(view.viewport(), Qt.MouseButton.LeftButton, pos=link)
    assert [url.toString() for url in opened] == ["https://ci.example.org/run/42"]


@pytest_twisted.inlineCallbacks
def test_the_join_dialog_lists_rooms_and_checks_names(window, server, sessions, qtbot):
    yield log_in(window, server)
    bob = yield other(sessions, server, "bob")
    topic_set = signal_fired(bob.topicChanged)
    bob.join("plans")
    yield until(lambda: "plans" in [r.casefold() for r in bob.machine.rooms])
    bob.set_topic("plans", "what we do next")
    yield topic_set
    dialog = window.join_dialog = JoinDialog(window)
    qtbot.addWidget(dialog)
    window.session.list_rooms()
    yield until(lambda: dialog.table.rowCount() == 2)
    rows = [[dialog.table.item(r, c).text() for c in range(3)] for r in range(2)]
    assert rows == [["general", "2", ""], ["plans", "1", "what we do next"]]
    dialog.table.selectRow(1)
    assert dialog.name.text() == "plans"
    ok = dialog.buttons.button(dialog.buttons.StandardButton.Ok)
    dialog.name.setText("no spaces allowed")
    assert not ok.isEnabled() and "can't hold" in dialog.problem.text()
    dialog.name.setText("brand-new")
    assert ok.isEnabled()
    dialog.accept()
    assert dialog.room == "brand-new"


@pytest_twisted.inlineCallbacks
def test_rooms_come_back_after_a_server_restart_with_their_queues(window, server, sessions):
    yield log_in(window, server)
    yield joined(window, "side")
    said = signal_fired(window.session.sendConfirmed)
    window.submit("in side before")
    yield said
    port = yield server_down(window, server)
    window.submit("typed in side while down")
    side = window.transcripts["side"]
    line = next(line for line in side.lines if line.text == "typed in side while down")
    assert line.state == models.SENDING
    server.start(f"tcp:{port}:interface=127.0.0.1", history=server.history_path)
    yield until(lambda: window.session.state == states.CONNECTED and len(window.peers.room_names()) == 2)
    assert window.peers.room_names() == ["general", "side"]
    yield until(lambda: line.state == models.CONFIRMED or line not in side.lines)
    yield until(lambda: texts_of(side).count("typed in side while down") == 1)
    assert texts_of(side).count("in side before") == 1
    stored = server.hub.eventlog.after(0, 10, "side")
    messages = []
    stored.addCallback(lambda page: messages.extend(m.text for m in page[0]))
    assert messages == ["in side before", "typed in side while down"]


@pytest_twisted.inlineCallbacks
def test_the_host_console_shows_rooms_and_their_members(qtbot, reactor, sessions):
    from qtclient.views.console import ServerConsole

    console = ServerConsole(reactor, "tcp:0:interface=127.0.0.1")
    qtbot.addWidget(console)
    assert console.start()
    port = console.server.port
    ann = sessions()
    in_room = signal_fired(ann.roomJoined)
    ann.connect_to("127.0.0.1", port, "ann")
    yield in_room
    side = signal_fired(ann.roomJoined)
    ann.join("side")
    yield side

    def rooms():
        tree = console.rooms
        return {
            tree.topLevelItem(i).text(0): [
                tree.topLevelItem(i).child(c).text(0) for c in range(tree.topLevelItem(i).childCount())
            ]
            for i in range(tree.topLevelItemCount())
        }

    yield until(lambda: rooms() == {"general": ["ann"], "side": ["ann"]})
    assert console.rooms_label.text() == "Rooms (2)"
    ann.part("side")
    yield until(lambda: rooms() == {"general": ["ann"]})
    yield console.stop()
