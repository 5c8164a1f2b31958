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


class ClientApp:
    """The running client: its QApplication, reactor, main window and safety
    net, wired as ``chat-client`` runs them (the end-to-end test drives one)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.qt = QApplication(sys.argv[:1])
        self.qt.setOrganizationName("chatproto")
        self.qt.setApplicationName("chat-client")
        from qtclient import qtreactor

        self.reactor = qtreactor.install(self.qt)
        from qtclient.errors import ErrorReporter
        from qtclient.views.main_window import MainWindow

        self.errors = ErrorReporter(parent=self.qt)
        self.errors.install()
        self.window = MainWindow(self.reactor)
        self.errors.problem.connect(self.window.show_internal_error)
        self.window.show()
        if args.host:
            self.window.open_console(args.host, start=True)

    def connect(self, args: argparse.Namespace) -> None:
        """``--connect``: ValueError with a message for the user if it can't be."""
        from qtclient.views.connect_dialog import check_target

        host, _, port = args.connect.rpartition(":")
        self.window.connect_to(check_target(host, port, args.nick or ""))

    def run(self) -> None:
        """The reactor (and with it Qt's loop) until the last window closes."""
        reactor, window = self.reactor, self.window

        def leaving():
            # Give the QUIT a moment to reach the server before the reactor stops.
            d = window.session.disconnect()
            return d.addTimeout(2, reactor).addErrback(lambda _: None)

        def close_windows(signum, frame) -> None:
            # A terminal's Ctrl-C or a SIGTERM closes the app as its window would.
            reactor.callFromThread(self.qt.closeAllWindows)

        def install_signals() -> None:  # after the reactor has installed its own
            signal.signal(signal.SIGINT, close_windows)
            signal.signal(signal.SIGTERM, close_windows)

        reactor.addSystemEventTrigger("before", "shutdown", leaving)
        reactor.callWhenRunning(install_signals)
        self.qt.lastWindowClosed.connect(reactor.stop)
        reactor.run()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    problem = startup_problem()
    if problem is not None:
        print(problem, file=sys.stderr)
        return 1
    client = ClientApp(args)
    if args.connect:
        try:
            client.connect(args)
        except ValueError as e:
            print(f"chat-client: {e}", file=sys.stderr)
            return 2
    client.run()
    return 0
