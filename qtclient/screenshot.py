"""Render the real windows with some chat in them: ``python -m qtclient.screenshot OUT.png``.

Hosts a server in-process on 127.0.0.1, connects the window as alice and
two more sessions, chats in two rooms (a topic, a link, a mention in the
room not shown), leaves one connection pending, then grabs the chat window
and the server console side by side.
"""

from __future__ import annotations

import os
import sys


def main(out: str) -> int:
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PyQt6.QtCore import QSettings
    from PyQt6.QtGui import QColor, QImage, QPainter
    from PyQt6.QtWidgets import QApplication

    app = QApplication(sys.argv[:1])
    from qtclient import qtreactor

    reactor = qtreactor.install(app)
    from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
    from twisted.internet.protocol import Protocol

    from qtclient.session import ChatSession
    from qtclient.views.connect_dialog import Target
    from qtclient.views.main_window import MainWindow

    settings = QSettings(
        os.path.join(os.path.dirname(os.path.abspath(out)), ".screenshot.ini"), QSettings.Format.IniFormat
    )
    window = MainWindow(reactor, settings)
    window.resize(900, 520)
    console = window.open_console("tcp:0:interface=127.0.0.1", start=True)
    console.resize(640, 520)
    port = console.server.port
    window.show()
    window.connect_to(Target("127.0.0.1", port, "alice"))
    bob = ChatSession(reactor)
    carol = ChatSession(reactor)
    lurker = []

    script = [
        (0.3, lambda: bob.connect_to("127.0.0.1", port, "bob")),
        (0.5, lambda: carol.connect_to("127.0.0.1", port, "carol")),
        (0.8, lambda: window.submit("Morning all! Build is green again.")),
        (0.9, lambda: bob.say("Nice. Did the slow-consumer fix land?")),
        (1.0, lambda: bob.join("release")),
        (1.1, lambda: window.submit("/join release")),
        (1.3, lambda: bob.set_topic("release", "v2.0 on Friday: rooms and protocol version 2")),
        (1.4, lambda: bob.say("Changelog draft: https://example.org/chat/changelog", "release")),
        (1.5, lambda: window.submit("Reading it now. The migration note is clear.")),
        (1.6, lambda: bob.say("Great, I'll tag it after the soak test.", "release")),
        (1.7, lambda: carol.say("alice, can you look at the soak numbers?")),
        (1.75, lambda: carol.say("They are in the usual place")),
        (1.8, lambda: bob.whisper("alice", "coffee at 11?")),
        (
            1.9,
            lambda: connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), Protocol()).addCallback(
                lurker.append
            ),
        ),
        (2.0, lambda: window.input.setPlainText("/msg bob sure, see you there")),
    ]
    for delay, action in script:
        reactor.callLater(delay, action)

    def grab() -> None:
        window.transcript.flush()
        console.refresh()
        shots = [window.grab().toImage(), console.grab().toImage()]
        gap = 16
        width = sum(s.width() for s in shots) + gap * (len(shots) + 1)
        height = max(s.height() for s in shots) + 2 * gap
        canvas = QImage(width, height, QImage.Format.Format_ARGB32)
        canvas.fill(QColor("#d9dde3"))
        painter = QPainter(canvas)
        x = gap
        for shot in shots:
            painter.drawImage(x, gap, shot)
            x += shot.width() + gap
        painter.end()
        canvas.save(out)
        print(f"wrote {out} ({width}x{height})")
        for transport in (p.transport for p in lurker):
            transport.loseConnection()
        bob.disconnect()
        carol.disconnect()
        console.close()
        window.close()

    reactor.callLater(2.6, grab)
    app.lastWindowClosed.connect(reactor.stop)
    reactor.run()
    settings_file = settings.fileName()
    if os.path.exists(settings_file):
        os.remove(settings_file)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else "docs/screenshot.png"))
