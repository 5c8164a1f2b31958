"""Qt client tests: QApplication and the qasync loop first, then the reactor.

Run with ``pytest --reactor=asyncio tests/qt``: pytest-twisted finds the
asyncio reactor already installed on the qasync loop and runs it, and with
it Qt's event loop, whenever a test waits on a Deferred.
"""

from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

import pytest


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    from PyQt6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(["tests"])
    # Tests close many windows; the last one closing must not post a Quit to
    # an event loop that pytest-qt then runs outside qasync (a crash).
    app.setQuitOnLastWindowClosed(False)
    from qtclient import qtreactor

    qtreactor.install(app)
    config._chat_app = app
    config.addinivalue_line("markers", "server(**options): options for the server fixture's start()")


@pytest.fixture
def reactor():
    from twisted.internet import reactor

    return reactor


@pytest.fixture
def settings(tmp_path):
    from PyQt6.QtCore import QSettings

    return QSettings(str(tmp_path / "client.ini"), QSettings.Format.IniFormat)


@pytest.fixture
def server(request, reactor, tmp_path):
    """A real chat server in this process on 127.0.0.1, port 0, started with
    the test's ``@pytest.mark.server(...)`` options if it has any."""
    import pytest_twisted

    from qtclient.host import HostedServer

    marker = request.node.get_closest_marker("server")
    hosted = HostedServer(reactor)
    hosted.history_path = str(tmp_path / "history.sqlite3")
    options = marker.kwargs if marker else {}
    hosted.start("tcp:0:interface=127.0.0.1", history=hosted.history_path, **options)
    yield hosted
    pytest_twisted.blockon(hosted.stop())


@pytest.fixture
def sessions(reactor):
    """Make ChatSessions with a fast retry; all are disconnected afterwards."""
    import pytest_twisted

    from qtclient.session import ChatSession

    made = []

    def make(retry=lambda attempt: 0.05):
        session = ChatSession(reactor, retry=retry)
        made.append(session)
        return session

    yield make
    from PyQt6 import sip

    for session in made:
        if not sip.isdeleted(session):  # a window's session goes with its window
            pytest_twisted.blockon(session.disconnect())


@pytest.fixture
def window(qtbot, reactor, settings, sessions):
    from qtclient.views.main_window import MainWindow

    win = MainWindow(reactor, settings, session=sessions())
    qtbot.addWidget(win)
    win.show()
    return win
