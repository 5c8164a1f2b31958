"""A big room in the window, against a real server process (protocol 22):
5,000 members, a count that says so, the tree paged to the last member in
folded-nick order as it scrolls, and Tab finding a member not listed yet."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
import pytest_twisted
from PyQt6.QtCore import Qt
from PyQt6.QtTest import QTest
from twisted.logger import globalLogPublisher
from waiting import signal_fired, until

from chatproto.rules import nick_key
from qtclient.errors import ErrorReporter
from qtclient.views.connect_dialog import Target
from scripts.spawn import server_env
from tests.processes import Server

MEMBERS = 5000
#: The crowd's member that sorts last, and is found by completion before it is listed.
LAST = "Quentin"


@pytest.fixture
def big_room(tmp_path):
    """A server whose rooms are big past 10 members, and a crowd process of
    MEMBERS - 1 members in ``big`` (the window is the last one)."""
    server = Server(
        str(tmp_path / "history.sqlite3"),
        *("--lazy-members", "10", "--max-per-address", str(MEMBERS + 100)),
        *("--address-rate", "100000", "--address-burst", str(MEMBERS + 100)),
    )
    server.start()
    argv = [sys.executable, "-m", "tests.crowd", str(server.port), "big", str(MEMBERS - 1), LAST]
    crowd = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=server_env(), text=True)
    try:
        ready = crowd.stdout.readline().strip()  # bounded: the crowd gives up after its DEADLINE
        assert ready == f"ready {MEMBERS - 1}", ready
        yield server
    finally:
        crowd.stdin.close()
        crowd.wait(30)
        server.stop()


@pytest_twisted.inlineCallbacks
def test_a_big_room_counts_pages_to_its_last_member_and_completes(window, big_room):
    reporter = ErrorReporter(io.StringIO())
    globalLogPublisher.addObserver(reporter._observe)
    hook, sys.excepthook = sys.excepthook, reporter.excepthook
    try:
        welcomed = signal_fired(window.session.welcomed)
        window.connect_to(Target("127.0.0.1", big_room.port, "alice"))
        yield welcomed
        joined = signal_fired(window.session.roomJoined, lambda state, reset: state.room == "big")
        window.submit("/join big")
        (state, _reset) = yield joined
        assert state.lazy and state.count == MEMBERS
        item = window.peers.room_item("big")
        yield until(lambda: item.text() == f"big ({MEMBERS} members)")
        yield until(lambda: window.peers.members("big"))
        assert LAST not in window.peers.members("big")

        window.show_room("big")
        window.input.setFocus()
        QTest.keyClicks(window.input, "hi que")
        QTest.keyClick(window.input, Qt.Key.Key_Tab)
        yield until(lambda: window.input.toPlainText() == f"hi {LAST} ")
        assert window.input.hasFocus(), "Tab completed instead of moving on"
        assert LAST not in window.peers.members("big"), "a completion is not a page of the list"

        # Scroll the tree to its end, a page at a time, until no page is left.
        view = window.peer_view
        for _ in range(MEMBERS // 200 + 10):
            if window.peers.fully_listed("big"):
                break
            rows = item.rowCount()
            view.scrollToBottom()
            yield until(
                lambda rows=rows: item.rowCount() > rows or window.peers.fully_listed("big"),
            )
        listed = window.peers.members("big")
        expected = sorted(["alice", LAST, *(f"m{n:04d}" for n in range(MEMBERS - 2))], key=nick_key)
        assert len(listed) == MEMBERS and listed == expected
        assert listed[-1] == LAST
        assert item.text() == f"big ({MEMBERS} members)"
    finally:
        sys.excepthook = hook
        globalLogPublisher.removeObserver(reporter._observe)
    assert reporter.count == 0, reporter.summaries


def crowd(port: int, room: str, count: int, *extra: str) -> subprocess.Popen:
    """``count`` members (and ``extra`` nicks) in ``room``, from a process of their own."""
    argv = [sys.executable, "-m", "tests.crowd", str(port), room, str(count), *extra]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=server_env(), text=True)
    ready = proc.stdout.readline().strip()  # bounded: the crowd gives up after its DEADLINE
    assert ready == f"ready {count + len(extra)}", ready
    return proc


@pytest.fixture
def lazy_server(tmp_path):
    """A server whose rooms are big past 10 members."""
    server = Server(str(tmp_path / "history.sqlite3"), "--lazy-members", "10", "--max-per-address", "100")
    server.start()
    yield server
    server.stop()


@pytest_twisted.inlineCallbacks
def test_a_fully_listed_big_room_says_whom_it_misses_and_refreshes(window, lazy_server):
    """Members who join after the list reached its end come unfollowed
    (docs/protocol.md 22.4): the room's row says how many are listed, and
    its menu's Refresh lists the room again from the start."""
    reporter = ErrorReporter(io.StringIO())
    globalLogPublisher.addObserver(reporter._observe)
    hook, sys.excepthook = sys.excepthook, reporter.excepthook
    crowds = []
    try:
        welcomed = signal_fired(window.session.welcomed)
        window.connect_to(Target("127.0.0.1", lazy_server.port, "alice"))
        yield welcomed
        window.submit("/join late")
        yield until(lambda: window.peers.room_item("late") is not None)
        item = window.peers.room_item("late")
        crowds.append(crowd(lazy_server.port, "late", 14))
        listed = sorted(["alice", *(f"m{n:04d}" for n in range(14))], key=nick_key)
        yield until(lambda: window.peers.members("late") == listed)
        yield until(lambda: item.text() == "late (15 members)")
        later = ["Lou", "Zoe", "bea"]
        crowds.append(crowd(lazy_server.port, "late", 0, *later))
        yield until(lambda: item.text() == "late (18 members, 15 listed)")
        assert window.peers.members("late") == listed, "joiners nobody followed have no row"
        menu = window.member_menu(item.index())
        (refresh,) = menu.actions()
        assert refresh.text() == "Refresh member list"
        refresh.trigger()
        everyone = sorted([*listed, *later], key=nick_key)
        yield until(lambda: window.peers.members("late") == everyone)
        assert item.text() == "late (18 members)"
    finally:
        for proc in crowds:
            proc.stdin.close()
            proc.wait(30)
        sys.excepthook = hook
        globalLogPublisher.removeObserver(reporter._observe)
    assert reporter.count == 0, reporter.summaries
