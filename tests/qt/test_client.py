"""The desktop client against a real in-process server on 127.0.0.1."""

from __future__ import annotations

import pytest
import pytest_twisted
from PyQt6.QtCore import Qt
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from waiting import signal_fired, until

from chatproto import codec
from chatproto.client import ChatClientProtocol
from qtclient import models
from qtclient import session as states
from qtclient.views.connect_dialog import ConnectDialog, Target, check_target


def texts(window) -> list[str]:
    window.transcript.flush()
    return [line.text for line in window.transcript.lines]


def line_for(window, text):
    window.transcript.flush()
    return next((line for line in window.transcript.lines if line.text == text), None)


@pytest_twisted.inlineCallbacks
def log_in(window, server, nick="alice"):
    """Connected, and in the default room (which the client joins by itself)."""
    welcomed = signal_fired(window.session.welcomed)
    in_room = signal_fired(window.session.roomJoined)
    window.connect_to(Target("127.0.0.1", server.port, nick))
    (welcome,) = yield welcomed
    yield in_room
    return welcome


@pytest_twisted.inlineCallbacks
def other(sessions, server, nick):
    session = sessions()
    in_room = signal_fired(session.roomJoined)
    session.connect_to("127.0.0.1", server.port, nick)
    yield in_room
    return session


@pytest_twisted.inlineCallbacks
def server_down(window, server):
    """Stop the server and wait until the window is reconnecting; its port,
    to start it again on."""
    port = server.port
    reconnecting = signal_fired(window.session.stateChanged, lambda s, d: s == states.RECONNECTING)
    yield server.stop()
    yield reconnecting
    return port


class Raw(ChatClientProtocol):
    def __init__(self):
        self.packets = []

    def packetReceived(self, packet):
        self.packets.append(packet)


@pytest_twisted.inlineCallbacks
def raw_connection(reactor, port):
    return (yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), Raw()))


@pytest_twisted.inlineCallbacks
def test_connect_and_log_in(window, server):
    welcome = yield log_in(window, server)
    assert welcome.nick == "alice"
    assert window.session.state == states.CONNECTED
    assert window.peers.room_names() == ["general"]
    assert window.peers.members("general") == ["alice"]
    assert "alice (you)" == window.peers.room_item("general").child(0).text()
    assert "general" in window.topic_label.text()
    assert window.input.isEnabled()
    assert "Connected to" in window.state_label.text()


@pytest_twisted.inlineCallbacks
def test_send_receive_and_own_message_confirmation(window, server, sessions):
    yield log_in(window, server)
    bob = yield other(sessions, server, "bob")
    heard = signal_fired(bob.messageReceived)
    confirmed = signal_fired(window.session.sendConfirmed)
    window.input.setPlainText("hello bob")
    window.submit(window.input.toPlainText())
    assert window.input.toPlainText() == ""
    assert line_for(window, "hello bob").state == models.SENDING
    _ref, seq = yield confirmed
    (message,) = yield heard
    assert (message.sender, message.text, message.seq) == ("alice", "hello bob", seq)
    yield until(lambda: seq in [line.seq for line in window.transcript.lines if line.text == "hello bob"])
    assert line_for(window, "hello bob").state == models.CONFIRMED
    got = signal_fired(window.session.messageReceived)
    bob.say("hi alice")
    yield got
    assert texts(window)[-1] == "hi alice"


@pytest_twisted.inlineCallbacks
def test_enter_sends_shift_enter_is_a_newline(window, server, qtbot):
    yield log_in(window, server)
    confirmed = signal_fired(window.session.sendConfirmed)
    window.input.setFocus()
    qtbot.keyClicks(window.input, "two")
    qtbot.keyClick(window.input, Qt.Key.Key_Return, Qt.KeyboardModifier.ShiftModifier)
    qtbot.keyClicks(window.input, "lines")
    qtbot.keyClick(window.input, Qt.Key.Key_Return)
    yield confirmed
    assert "two\nlines" in texts(window)


@pytest_twisted.inlineCallbacks
def test_peer_tree_pending_then_connected_then_gone(window, server, reactor):
    yield log_in(window, server)
    pending = signal_fired(window.session.pendingChanged)
    raw = yield raw_connection(reactor, server.port)
    yield pending
    assert len(window.peers.pending_ids()) == 1
    assert window.peers.pending_branch.text() == "Pending (1)"
    joined = signal_fired(window.session.peerJoined)
    raw.send(codec.Login("dave", 1))
    yield joined
    assert window.peers.pending_ids() == []
    assert sorted(window.peers.connected_nicks()) == ["alice", "dave"]
    left = signal_fired(window.session.peerLeft)
    raw.transport.loseConnection()
    (gone,) = yield left
    assert gone.reason == "connection_lost"
    assert window.peers.members("general") == ["alice"]
    assert window.peers.room_item("general").text() == "general (1 member)"
    assert "dave lost the connection" in texts(window)


@pytest_twisted.inlineCallbacks
def test_whisper_and_double_click_to_whisper(window, server, sessions):
    yield log_in(window, server)
    bob = yield other(sessions, server, "bob")
    yield until(lambda: "bob" in window.peers.connected_nicks())
    branch = window.peers.room_item("general")
    row = next(r for r in range(branch.rowCount()) if branch.child(r).text() == "bob")
    window.peer_view.doubleClicked.emit(branch.child(row).index())
    assert window.input.toPlainText() == "/msg bob "
    whispered = signal_fired(bob.privateReceived)
    window.submit("/msg bob psst")
    (private,) = yield whispered
    assert (private.sender, private.to, private.text, private.ref) == ("alice", "bob", "psst", None)
    yield until(lambda: any(line.kind == models.PRIVATE for line in window.transcript.lines))


@pytest_twisted.inlineCallbacks
def test_nick_taken_is_shown_and_not_retried(window, server, sessions):
    yield other(sessions, server, "alice")
    refused = signal_fired(window.session.errorReceived)
    window.connect_to(Target("127.0.0.1", server.port, "ALICE"))
    code, _message = yield refused
    assert code == "nick_taken"
    yield until(lambda: window.session.state == states.GIVEN_UP)
    assert window.banner.isVisible()
    assert "Can't log in" in window.banner.text() and "taken" in window.banner.text()
    assert "Disconnected" in window.state_label.text()


@pytest_twisted.inlineCallbacks
def test_reconnect_after_server_restart_with_queue_and_catch_up(window, server, sessions):
    yield log_in(window, server)
    bob = yield other(sessions, server, "bob")
    said = signal_fired(window.session.sendConfirmed)
    window.submit("before restart")
    yield said
    port = yield server_down(window, server)
    assert window.input.isEnabled(), "typing goes on while reconnecting"
    window.submit("typed while down")
    assert line_for(window, "typed while down").state == models.SENDING
    server.start(f"tcp:{port}:interface=127.0.0.1", history=server.history_path)
    yield until(lambda: bob.state == states.CONNECTED and window.session.state == states.CONNECTED)
    yield until(lambda: getattr(line_for(window, "typed while down"), "state", None) == models.CONFIRMED)
    assert texts(window).count("before restart") == 1
    grey = [line.text for line in window.transcript.lines if line.kind == models.SYSTEM]
    assert "connection lost" in grey, "the outage leaves a trace"
    assert "reconnected (0 missed messages fetched)" in grey, "nobody spoke meanwhile"
    # bob speaks while alice's link is down: she catches up through HISTORY after
    back = signal_fired(window.session.roomJoined)
    window.session.machine.link.transport.loseConnection()
    bob.say("you missed this")
    yield back
    yield until(lambda: "you missed this" in texts(window))
    yield until(lambda: sum(line.text.startswith("reconnected (") for line in window.transcript.lines) == 2)
    seqs = [line.seq for line in window.transcript.lines if line.seq is not None]
    assert seqs == sorted(seqs) and len(seqs) == len(set(seqs))


@pytest_twisted.inlineCallbacks
def test_history_paging_when_scrolled_to_the_top(window, server, sessions):
    bob = yield other(sessions, server, "bob")
    for i in range(120):
        server.hub.messages.say(server.hub.session_for("bob").connection, f"old {i}", None, "general")
    server.hub.flush()
    del bob
    yield log_in(window, server)
    yield until(lambda: len([t for t in texts(window) if t.startswith("old")]) == 50)
    page = signal_fired(window.session.historyReceived)
    bar = window.transcript_view.verticalScrollBar()
    yield until(lambda: bar.value() == bar.maximum() > 0)  # follows the newest
    bar.setValue(bar.minimum())
    room, messages, more, direction = yield page
    assert room == "general"
    assert (len(messages), more, direction) == (70, False, "before")
    olds = [t for t in texts(window) if t.startswith("old")]
    assert olds == [f"old {i}" for i in range(120)]


@pytest_twisted.inlineCallbacks
def test_rate_limited_message_is_kept_and_can_be_retried(window, server):
    yield log_in(window, server)
    failed = signal_fired(window.session.sendFailed)
    for i in range(41):
        window.session.say(f"flood {i}")
    ref, why = yield failed
    line = line_for(window, "flood 40")
    assert line.state == models.FAILED and "slow down" in why
    row = window.transcript.lines.index(line)
    confirmed = signal_fired(window.session.sendConfirmed, lambda r, s: r == ref)
    yield until(lambda: True, timeout=1)
    window.session.limits  # noqa: B018
    window.transcript_view.doubleClicked.emit(window.transcript.index(row, 2))
    # The burst may still be spent: keep retrying until the bucket refills.
    yield until(lambda: _retry_if_failed(window, ref), timeout=5)
    yield confirmed
    assert "flood 40" in texts(window)


def _retry_if_failed(window, ref) -> bool:
    window.transcript.flush()
    line = next((line for line in window.transcript.lines if line.ref == ref), None)
    if line is None:
        return True
    if line.state == models.FAILED:
        window.transcript.mark_sending(ref)
        window.session.retry(ref)
    return False


@pytest_twisted.inlineCallbacks
def test_unreachable_server_says_so_and_keeps_trying(window, reactor):
    from twisted.internet.endpoints import TCP4ServerEndpoint
    from twisted.internet.protocol import Factory

    port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(Factory())
    closed_port = port.getHost().port
    yield port.stopListening()
    error = signal_fired(window.session.errorReceived)
    retrying = signal_fired(window.session.reconnectScheduled)
    window.connect_to(Target("127.0.0.1", closed_port, "alice"))
    code, message = yield error
    assert code == "unreachable" and "not reachable" in message
    yield retrying
    yield until(lambda: "Reconnecting in" in window.state_label.text())
    assert "not reachable" in window.banner.text()


@pytest.mark.parametrize(
    "host, port, nick, complaint",
    [
        ("", "7777", "alice", "host name"),
        ("bad host", "7777", "alice", "not a valid host"),
        ("-x.example", "7777", "alice", "not a valid host"),
        ("127.0.0.1", "0", "alice", "1 to 65535"),
        ("127.0.0.1", "65536", "alice", "1 to 65535"),
        ("127.0.0.1", "http", "alice", "1 to 65535"),
        ("127.0.0.1", "7777", "", "Nickname"),
        ("127.0.0.1", "7777", "has space", "Nickname"),
    ],
)
def test_bad_connection_input_is_refused_with_a_message(qtbot, settings, host, port, nick, complaint):
    with pytest.raises(ValueError, match=complaint):
        check_target(host, port, nick)
    dialog = ConnectDialog(None, settings)
    qtbot.addWidget(dialog)
    dialog.host.setText(host)
    dialog.port.setText(port)
    dialog.nick.setText(nick)
    dialog.accept()
    assert dialog.result() != ConnectDialog.DialogCode.Accepted
    assert complaint in dialog.error.text()


def test_good_input_is_remembered(qtbot, settings):
    assert check_target(" ::1 ", "7777", "Ａlice") == Target("::1", 7777, "Alice")
    dialog = ConnectDialog(None, settings)
    qtbot.addWidget(dialog)
    dialog.host.setText("chat.example.org")
    dialog.port.setText("7000")
    dialog.nick.setText("zoë")
    dialog.accept()
    assert dialog.target == Target("chat.example.org", 7000, "zoë")
    again = ConnectDialog(None, settings)
    qtbot.addWidget(again)
    assert (again.host.text(), again.port.text(), again.nick.text()) == ("chat.example.org", "7000", "zoë")


def test_unknown_command_and_bad_whisper_keep_the_input(window):
    window.input.setPlainText("/msg bob")
    window.submit("/msg bob")
    assert window.input.toPlainText() == "/msg bob"
    assert texts(window)[-1] == "usage: /msg NICK text"
    window.submit("/dance")
    assert "unknown command /dance" in texts(window)[-1]
