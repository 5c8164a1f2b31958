"""Host mode's console, the transcript model, and the app as a process."""

from __future__ import annotations

import os
import signal
import sys

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.protocol import ProcessProtocol
from waiting import signal_fired, until

from chatproto import codec
from chatproto.client import ChatClientProtocol
from qtclient import models
from qtclient.views.console import ServerConsole

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class Raw(ChatClientProtocol):
    def __init__(self):
        self.packets = []
        self.lost = defer.Deferred()

    def packetReceived(self, packet):
        self.packets.append(packet)

    def connectionLost(self, reason):
        self.lost.callback(None)


def tree_rows(tree) -> list[list[str]]:
    return [
        [tree.topLevelItem(i).text(c) for c in range(tree.columnCount())]
        for i in range(tree.topLevelItemCount())
    ]


@pytest_twisted.inlineCallbacks
def test_console_trees_kick_and_stop(qtbot, reactor):
    console = ServerConsole(reactor, "tcp:0:interface=127.0.0.1")
    qtbot.addWidget(console)
    started = signal_fired(console.started)
    assert console.start()
    (address,) = yield started
    port = console.server.port
    assert address == f"127.0.0.1:{port}"
    raw = yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), Raw())
    yield until(lambda: console.pending.topLevelItemCount() == 1)
    (row,) = tree_rows(console.pending)
    local = raw.transport.getHost()
    assert row[1] == f"127.0.0.1:{local.port}", "the console shows the peer's address"
    assert console.pending_label.text() == "Pending (1)"
    raw.send(codec.Login("eve", 1))
    yield until(lambda: console.connected.topLevelItemCount() == 1)
    assert console.pending.topLevelItemCount() == 0
    nick, _id, addr, _since = tree_rows(console.connected)[0]
    assert (nick, addr) == ("eve", f"127.0.0.1:{local.port}")
    # logins are logged a line for many, within half a second (chatproto/core/connection_log.py)
    yield until(lambda: any("logged in: eve as " in line for line in console.log.toPlainText().splitlines()))
    console.connected.topLevelItem(0).setSelected(True)
    console.kick_selected()
    yield raw.lost
    assert codec.Bye("kicked") in raw.packets
    yield until(lambda: console.connected.topLevelItemCount() == 0)
    yield console.stop()
    assert console.start_button.isEnabled() and not console.stop_button.isEnabled()
    assert console.server.hub is None


def console_state(console) -> tuple:
    return (
        sorted(int(row[0]) for row in tree_rows(console.pending)),
        sorted((row[0], int(row[1]), row[2]) for row in tree_rows(console.connected)),
    )


def room_state(room) -> tuple:
    return (
        sorted(c.id for c in room.pending),
        sorted((s.nick, s.id, s.connection.address) for s in room.sessions),
    )


@pytest_twisted.inlineCallbacks
def test_console_follows_each_event_without_rebuilding(qtbot, reactor, monkeypatch):
    """Logins, quits, drops and a resume: the trees always match the room,
    from the events' own payloads (a rebuild would fail the test)."""
    console = ServerConsole(reactor, "tcp:0:interface=127.0.0.1")
    qtbot.addWidget(console)
    assert console.start()
    port = console.server.port
    monkeypatch.setattr(console, "refresh", lambda: pytest.fail("rebuilt the trees"))
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", port)
    clients = []
    for _ in range(12):
        clients.append((yield connectProtocol(endpoint, Raw())))
    for i, client in enumerate(clients[:8]):
        client.send(codec.Login(f"n{i}", 1))
    yield until(
        lambda: (
            console_state(console) == room_state(console.server.hub)
            and len(room_state(console.server.hub)[1]) == 8
        )
    )
    # Each WELCOME may still be on its way when the hub has the session.
    yield until(lambda: all(any(isinstance(p, codec.Welcome) for p in c.packets) for c in clients[:8]))
    clients[0].send(codec.Quit())
    clients[1].transport.loseConnection()
    clients[8].transport.loseConnection()
    welcome = next(p for p in clients[2].packets if isinstance(p, codec.Welcome))
    again = yield connectProtocol(endpoint, Raw())
    again.send(codec.Login("n2", 1, welcome.resume))  # takes n2 over from clients[2]
    yield until(lambda: any(isinstance(p, codec.Welcome) for p in again.packets))
    yield until(lambda: console_state(console) == room_state(console.server.hub))
    pending, connected = console_state(console)
    assert len(pending) == 3 and len(connected) == 6
    local = again.transport.getHost()
    assert ("n2", welcome.id, f"127.0.0.1:{local.port}") in connected, "the resumed row shows the new address"
    monkeypatch.undo()
    yield console.stop()


def test_console_bad_endpoint_is_reported(qtbot, reactor):
    console = ServerConsole(reactor, "tcp:notaport")
    qtbot.addWidget(console)
    assert not console.start()
    assert "can't listen on tcp:notaport" in console.log.toPlainText()
    assert console.status.text() == "stopped"


@pytest_twisted.inlineCallbacks
def test_console_port_in_use_is_reported(qtbot, reactor):
    first = ServerConsole(reactor, "tcp:0:interface=127.0.0.1")
    qtbot.addWidget(first)
    first.start()
    second = ServerConsole(reactor, f"tcp:{first.server.port}:interface=127.0.0.1")
    qtbot.addWidget(second)
    assert not second.start()
    assert "Address already in use" in second.log.toPlainText()
    yield first.stop()


# -- the transcript model -------------------------------------------------------


def message(seq, text=None, sender="bob"):
    return codec.Message(seq, 1000.0 + seq, sender, text or f"m{seq}")


def test_transcript_orders_by_seq_and_drops_duplicates(qtbot):
    model = models.TranscriptModel()
    for seq in (1, 2, 5, 6):
        model.add_message(message(seq), "alice")
    model.flush()
    model.add_history([message(3), message(4), message(5)], "alice", older=False)  # catch-up
    model.add_message(message(6), "alice")
    model.flush()
    assert [line.seq for line in model.lines] == [1, 2, 3, 4, 5, 6]


def test_transcript_older_pages_go_on_top(qtbot):
    model = models.TranscriptModel()
    model.add_history([message(10), message(11)], "alice", older=False)
    model.flush()
    model.add_history([message(8), message(9)], "alice", older=True)
    assert [line.seq for line in model.lines] == [8, 9, 10, 11]


def test_transcript_is_capped_and_batched(qtbot):
    model = models.TranscriptModel(max_lines=100)
    inserts = []
    model.rowsInserted.connect(lambda parent, first, last: inserts.append(last - first + 1))
    for seq in range(1, 1001):
        model.add_message(message(seq), "alice")
    assert model.rowCount() == 0, "nothing is inserted until the batch is flushed"
    model.flush()
    assert inserts == [1000], "one view update for the whole batch"
    assert [line.seq for line in model.lines] == list(range(901, 1001))
    model.add_history([message(900)], "alice", older=True)
    assert model.lines[0].seq == 900, "trimmed lines come back through history"


def test_sending_lines_stay_at_the_bottom_until_confirmed(qtbot):
    model = models.TranscriptModel()
    model.add_message(message(1), "alice")
    model.add_sending("c1", "alice", "mine")
    model.add_message(message(2), "alice")
    model.flush()
    assert [(line.text, line.state) for line in model.lines] == [
        ("m1", models.CONFIRMED),
        ("m2", models.CONFIRMED),
        ("mine", models.SENDING),
    ]
    model.mark_failed("c1", "slow down")
    assert model.failed_ref_at(2) == "c1"
    assert "not sent: slow down" in model.data(model.index(2, 2))
    model.confirm("c1")
    model.add_message(message(3, "mine", "alice"), "alice")
    model.flush()
    assert [(line.text, line.kind) for line in model.lines][-1] == ("mine", models.OWN)
    assert len(model.lines) == 3


# -- the app as people run it ------------------------------------------------------


class AppProcess(ProcessProtocol):
    def __init__(self):
        self.output = b""
        self.ended = defer.Deferred()

    def outReceived(self, data):
        self.output += data

    errReceived = outReceived

    def processEnded(self, reason):
        value = reason.value
        code = (
            0
            if isinstance(value, ProcessDone)
            else (
                value.exitCode if isinstance(value, ProcessTerminated) and value.exitCode is not None else -1
            )
        )
        self.ended.callback(code)


@pytest_twisted.inlineCallbacks
def test_app_quits_cleanly_and_says_quit(server, reactor, tmp_path):
    watcher = yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", server.port), Raw())
    watcher.send(codec.Login("watcher", 1))
    yield until(lambda: any(isinstance(p, codec.Welcome) for p in watcher.packets))
    env = dict(
        os.environ,
        QT_QPA_PLATFORM="offscreen",
        PYTHONPATH=ROOT,
        HOME=str(tmp_path),
        XDG_CONFIG_HOME=str(tmp_path),
    )
    app = AppProcess()
    argv = [sys.executable, "-m", "qtclient", "--connect", f"127.0.0.1:{server.port}", "--nick", "quitter"]
    process = reactor.spawnProcess(app, sys.executable, argv, env=env, path=ROOT)
    yield until(
        lambda: any(isinstance(p, codec.Joined) and p.nick == "quitter" for p in watcher.packets), timeout=20
    )
    started = reactor.seconds()
    process.signalProcess(signal.SIGTERM)  # closes the window, as a user would
    code = yield app.ended.addTimeout(10, reactor)
    assert code == 0, app.output.decode(errors="replace")
    assert reactor.seconds() - started < 5, "exits promptly"
    yield until(lambda: any(isinstance(p, codec.Left) for p in watcher.packets))
    left = next(p for p in watcher.packets if isinstance(p, codec.Left))
    assert (left.nick, left.reason) == ("quitter", "quit"), "the window sent QUIT before exiting"
    watcher.transport.loseConnection()
