"""``chat-client``: create the QApplication, install the reactor, open windows."""

from __future__ import annotations

import argparse
import signal
import sys

from PyQt6.QtWidgets import QApplication

from qtclient.platform_check import startup_problem


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="chat-client", description="Desktop chat client.")
    parser.add_argument(
        "--host",
        nargs="?",
        const="tcp:7777:interface=127.0.0.1",
        metavar="ENDPOINT",
        help="also run a server in this process and open its console "
        "(default endpoint tcp:7777:interface=127.0.0.1)",
    )
    parser.add_argument("--connect", metavar="HOST:PORT", help="connect at start")
    parser.add_argument("--nick", help="nickname for --connect")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    problem = startup_problem()
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    app = QApplication(sys.argv[:1])
    app.setOrganizationName("chatproto")
    app.setApplicationName("chat-client")
    from qtclient import qtreactor

    reactor = qtreactor.install(app)
    from twisted.internet.defer import Deferred

    from qtclient.views.connect_dialog import check_target
    from qtclient.views.main_window import MainWindow

    window = MainWindow(reactor)
    window.show()
    if args.host:
        window.open_console(args.host, start=True)
    if args.connect:
        host, _, port = args.connect.rpartition(":")
        try:
            window.connect_to(check_target(host, port, args.nick or ""))
        except ValueError as e:
            print(f"chat-client: {e}", file=sys.stderr)
            return 2

    def leaving() -> Deferred:
        # Give the QUIT a moment to reach the server before the reactor stops.
        d = window.session.disconnect()
        return d.addTimeout(2, reactor).addErrback(lambda _: None)

    def close_windows(signum, frame) -> None:
        # A terminal's Ctrl-C or a SIGTERM closes the app as its window would.
        reactor.callFromThread(app.closeAllWindows)

    def install_signals() -> None:  # after the reactor has installed its own
        signal.signal(signal.SIGINT, close_windows)
        signal.signal(signal.SIGTERM, close_windows)

    reactor.addSystemEventTrigger("before", "shutdown", leaving)
    reactor.callWhenRunning(install_signals)
    app.lastWindowClosed.connect(reactor.stop)
    reactor.run()
    return 0
