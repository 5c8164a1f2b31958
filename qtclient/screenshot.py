"""Render the real windows with some chat in them: ``python -m qtclient.screenshot OUT.png``.

Hosts a server in-process on 127.0.0.1, connects the window as alice and a
second session as bob, leaves one connection pending, chats, then grabs the
chat window and the server console side by side.
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
    window.resize(820, 480)
    console = window.open_console("tcp:0:interface=127.0.0.1", start=True)
    console.resize(620, 480)
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
        (1.0, lambda: bob.say("Nice. Did the slow-consumer fix land?")),
        (1.2, lambda: window.submit("Yes: cut off at sendq, nobody else notices.")),
        (1.4, lambda: carol.say("I'll run the soak test tonight")),
        (1.5, lambda: bob.whisper("alice", "coffee at 11?")),
        (
            1.7,
            lambda: connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), Protocol()).addCallback(
                lurker.append
            ),
        ),
        (1.8, lambda: carol.disconnect()),
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
