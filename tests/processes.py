"""A chat server process and a desktop-protocol peer on a blocking socket,
for the tests that drive real outside clients (a browser, irssi) from
plain pytest functions."""

from __future__ import annotations

import os
import socket
import subprocess
import time

from chatproto import codec
from scripts.spawn import server_argv, start_server

LOOPBACK = "tcp:0:interface=127.0.0.1"
WAIT = 20  # seconds any one condition may take


def admin_account(history: str, nick: str, password: str) -> None:
    """The account a server makes at start for ``--admin nick`` (marked as
    its operator's), made beforehand with a known password: what the
    operator has once the one-time password is changed."""
    import time

    from chatproto.backends.accounts import AccountRecord
    from chatproto.backends.sqlite import SQLiteLog
    from chatproto.backends.sqlite_accounts import SQLiteAccounts
    from chatproto.passwords import hash_password
    from chatproto.rules import nick_key

    log = SQLiteLog(history)
    try:
        record = AccountRecord(nick_key(nick), nick, hash_password(password), time.time(), admin=True)
        SQLiteAccounts(log).create_account(record)
    finally:
        log.close()


class Server:
    """A chat server process with ``--web`` and ``--irc``; ``restart`` keeps
    its history and ports."""

    def __init__(self, history: str, *args: str) -> None:
        self.history, self.args = history, args
        self.proc = None
        self.port = self.web_port = self.irc_port = None

    def start(self, listen: str = LOOPBACK, web: str = LOOPBACK, irc: str = LOOPBACK) -> None:
        argv = server_argv("--web", web, "--irc", irc, "--history", self.history, *self.args, listen=listen)
        self.proc, (self.port, self.web_port, self.irc_port) = start_server(argv, 3)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(20)

    def restart(self) -> None:
        self.stop()
        ports = (self.port, self.web_port, self.irc_port)
        self.start(*(f"tcp:{port}:interface=127.0.0.1" for port in ports))

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}/"


class TcpPeer:
    """A desktop-protocol client on a blocking socket, for a page to meet."""

    def __init__(self, port: int, nick: str, password: str | None = None) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=WAIT)
        self.buffer = b""
        self.send(codec.Login(nick, 2, password=password))
        self.expect(codec.Welcome)

    def send(self, packet) -> None:
        self.sock.sendall(codec.encode_frame(packet))

    def expect(self, kind, where=lambda packet: True):
        """The next packet of ``kind`` that ``where`` accepts (bounded by the socket timeout)."""
        for _ in range(10_000):
            payloads, self.buffer = codec.split_frames(self.buffer)
            for i, payload in enumerate(payloads):
                packet = codec.decode_server(payload)
                if isinstance(packet, kind) and where(packet):
                    rest = b"".join(codec.frame(p) for p in payloads[i + 1 :])
                    self.buffer = rest + self.buffer
                    return packet
            data = self.sock.recv(65536)
            if not data:
                raise AssertionError(f"closed while waiting for {kind.__name__}")
            self.buffer += data
        raise AssertionError(f"no {kind.__name__}")

    def close(self) -> None:
        self.sock.close()


class Tmux:
    """One terminal IRC client (irssi, WeeChat) in a tmux server of its own
    (its own socket): send-keys to type, capture-pane to read."""

    def __init__(self, folder: str, command: str, width: int = 160) -> None:
        self.socket = f"chattest-{os.getpid()}"
        self.env = dict(os.environ, LANG="C.UTF-8", LC_ALL="C.UTF-8", TERM="xterm-256color")
        self.tmux("new-session", "-d", "-s", "irc", "-x", str(width), "-y", "48", command)

    def tmux(self, *args: str) -> str:
        run = subprocess.run(
            ["tmux", "-u", "-L", self.socket, *args], env=self.env, capture_output=True, timeout=WAIT
        )
        return run.stdout.decode("utf-8", "replace")

    def screen(self) -> str:
        return self.tmux("capture-pane", "-p", "-J", "-t", "irc")

    def type(self, text: str) -> None:
        self.tmux("send-keys", "-t", "irc", "-l", text)
        self.tmux("send-keys", "-t", "irc", "Enter")

    def until(self, text: str) -> str:
        """The screen once it shows ``text`` (polled; at most WAIT seconds)."""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            screen = self.screen()
            if text in screen:
                return screen
            time.sleep(0.1)
        raise AssertionError(f"the client never showed {text!r}; the screen:\n{self.screen()}")

    def close(self) -> None:
        self.tmux("kill-server")


def join_general(tmux: Tmux, desk: TcpPeer, shown: str = "#general") -> None:
    """The IRC client (ann) joins #general, which desk sees and it shows."""
    tmux.type("/join #general")
    desk.expect(codec.Joined, lambda joined: joined.nick == "ann")
    tmux.until(shown)
