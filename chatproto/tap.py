"""``twistd chat``: command-line options -> the service tree.

The reactor is never imported at module load: twistd (or a test) picks it,
and :func:`makeService` takes it as an argument.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from twisted.application.service import MultiService
from twisted.internet.endpoints import serverFromString
from twisted.python import usage

from chatproto.limits import Limits
from chatproto.room import Room
from chatproto.service import GracefulExit, chat_service, heap_trimmer
from chatproto.store import SQLiteHistory

DEFAULT_LISTEN = "tcp:7777"
DEFAULT_HISTORY = "chat.sqlite3"
_D = Limits()


def _number(kind: Callable, what: str, minimum: float = 0, exclusive: bool = True) -> Callable:
    def coerce(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise ValueError(f"{what} must be a {'whole ' if kind is int else ''}number, not {text!r}")
        if value < minimum or (exclusive and value == minimum) or value != value:
            bound = "greater than" if exclusive else "at least"
            raise ValueError(f"{what} must be {bound} {minimum}, not {text!r}")
        return value

    coerce.coerceDoc = ""
    return coerce


class _ParseOnly:
    """Stands in for a reactor while checking an endpoint string: parsing an
    endpoint only records the reactor, so the real one needn't be imported."""


def check_endpoint(description: str):
    try:
        return serverFromString(_ParseOnly(), description)
    except Exception as e:  # parsers raise ValueError, KeyError, OpenSSL errors...
        raise usage.UsageError(f"--listen {description!r} is not a usable endpoint: {e}") from None


class Options(usage.Options):
    synopsis = "[options]"
    longdesc = (
        "A small-group chat server speaking chat protocol version 1 "
        "(length-prefixed JSON packets) on one or more Twisted endpoints."
    )
    optParameters = [
        ["history", None, DEFAULT_HISTORY, "SQLite history file (':memory:' keeps none across restarts)."],
        ["name", None, "chat", "Server name sent in WELCOME."],
        ["motd", None, "", "Message of the day sent in WELCOME."],
        [
            "max-clients",
            None,
            _D.max_clients,
            "Open connections allowed, pending or connected.",
            _number(int, "--max-clients"),
        ],
        [
            "max-frame",
            None,
            _D.max_frame,
            "Largest payload accepted from a client, in bytes.",
            _number(int, "--max-frame", 1024, exclusive=False),
        ],
        ["max-text", None, _D.max_text, "Longest message text, in characters.", _number(int, "--max-text")],
        ["rate", None, _D.rate, "SAY/WHISPER per second per connection.", _number(float, "--rate")],
        ["burst", None, _D.burst, "SAY/WHISPER burst per connection.", _number(int, "--burst")],
        [
            "sendq",
            None,
            _D.sendq,
            "Unsent bytes allowed before a client is cut off as a slow consumer.",
            _number(int, "--sendq"),
        ],
        [
            "login-timeout",
            None,
            _D.login_timeout,
            "Seconds a connection may stay pending.",
            _number(float, "--login-timeout"),
        ],
        [
            "ping-interval",
            None,
            _D.ping_interval,
            "Seconds of silence before the server sends PING.",
            _number(float, "--ping-interval"),
        ],
        [
            "idle-timeout",
            None,
            _D.idle_timeout,
            "Seconds of silence before a client is dropped.",
            _number(float, "--idle-timeout"),
        ],
        [
            "history-replay",
            None,
            _D.history_replay,
            "Messages of history sent in WELCOME.",
            _number(int, "--history-replay", 0, exclusive=False),
        ],
        ["history-page", None, _D.history_page, "Largest HISTORY page.", _number(int, "--history-page")],
    ]

    def __init__(self) -> None:
        super().__init__()
        self["listen"] = []

    def opt_listen(self, description: str) -> None:
        """Endpoint to listen on, e.g. tcp:7777 or
        ssl:7778:privateKey=key.pem:certKey=cert.pem (repeatable; default tcp:7777)."""
        check_endpoint(description)
        self["listen"].append(description)

    def postOptions(self) -> None:
        if not self["listen"]:
            self["listen"] = [DEFAULT_LISTEN]
        try:
            self["limits"] = Limits(
                max_frame=self["max-frame"],
                max_text=self["max-text"],
                max_clients=self["max-clients"],
                sendq=self["sendq"],
                rate=self["rate"],
                burst=self["burst"],
                login_timeout=self["login-timeout"],
                ping_interval=self["ping-interval"],
                idle_timeout=self["idle-timeout"],
                history_replay=self["history-replay"],
                history_page=self["history-page"],
            )
        except ValueError as e:
            raise usage.UsageError(str(e)) from None
        history = self["history"]
        if history != ":memory:":
            folder = os.path.dirname(os.path.abspath(history))
            if not os.path.isdir(folder):
                raise usage.UsageError(f"--history {history!r}: folder {folder!r} does not exist")
            if not os.access(folder, os.W_OK) and not os.access(history, os.W_OK):
                raise usage.UsageError(f"--history {history!r}: not writable")


def makeService(config: Options, reactor=None) -> MultiService:
    if reactor is None:
        from twisted.internet import reactor
    room = Room(
        SQLiteHistory(config["history"]),
        reactor,
        limits=config["limits"],
        name=config["name"],
        motd=config["motd"],
    )
    endpoints = [(d, serverFromString(reactor, d)) for d in config["listen"]]
    service = chat_service(room, endpoints)
    GracefulExit(reactor).setServiceParent(service)
    trimmer = heap_trimmer(reactor)
    if trimmer is not None:
        trimmer.setServiceParent(service)
    return service
