"""``chat-client``: create the QApplication, install the reactor, open windows."""

from __future__ import annotations

import argparse
import os
import signal
import stat
import sys
from collections.abc import Callable, MutableMapping
from typing import TYPE_CHECKING

from PyQt6.QtWidgets import QApplication

from qtclient.platform_check import startup_problem

if TYPE_CHECKING:
    from qtclient.views.connect_dialog import Target

#: The environment variable --connect takes a password from (and then unsets).
PASSWORD_ENV = "CHAT_PASSWORD"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    # No abbreviations: "--password SECRET" must be an error, not --password-file.
    parser = argparse.ArgumentParser(
        prog="chat-client", description="Desktop chat client.", allow_abbrev=False
    )
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
    parser.add_argument(
        "--password-file",
        metavar="FILE",
        help=f"the password for --connect: the first line of FILE (or set {PASSWORD_ENV}; "
        "otherwise one saved in the keyring for that nick@host:port). There is no --password: "
        "a command line is visible to every user in ps",
    )
    args = parser.parse_args(argv)
    if args.password_file and not args.connect:
        parser.error("--password-file is for --connect")
    return args


def startup_password(
    args: argparse.Namespace,
    target: Target,
    environ: MutableMapping[str, str],
    saved: Callable[[str, int, str], str | None],
) -> str | None:
    """The password for --connect: --password-file, then the environment
    variable (removed from ``environ`` once read, so nothing started later
    inherits it), then ``saved`` (the keyring). ValueError if the file can't
    be read or is empty."""
    from_env = environ.pop(PASSWORD_ENV, None)
    if args.password_file:
        try:
            with open(args.password_file, encoding="utf-8") as f:
                password = f.readline().rstrip("\r\n")
            mode = os.stat(args.password_file).st_mode
        except OSError as e:
            raise ValueError(f"can't read the password file: {e.strerror}: {args.password_file}") from None
        if not password:
            raise ValueError(f"the password file {args.password_file} is empty")
        if mode & (stat.S_IRGRP | stat.S_IROTH):
            print(
                f"chat-client: warning: {args.password_file} can be read by others (chmod 600 it)",
                file=sys.stderr,
            )
        return password
    if from_env:
        return from_env
    return saved(target.host, target.port, target.nick)


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
        """``--connect``, with the password :func:`startup_password` finds:
        ValueError with a message for the user if it can't be."""
        from qtclient import saved_passwords
        from qtclient.views.connect_dialog import check_target

        host, _, port = args.connect.rpartition(":")
        target = check_target(host, port, args.nick or "")
        password = startup_password(args, target, os.environ, saved_passwords.find)
        self.window.connect_to(check_target(host, port, args.nick or "", password=password or ""))

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
