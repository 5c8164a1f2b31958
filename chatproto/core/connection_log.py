"""The log lines of connections coming and going, gathered.

A login, a session's leaving and a connection's closing each deserve a
line, but a login storm of thousands a second made one log event each: its
formatting and its write (a system call per line, and a wake-up of whatever
reads the log, often on the server's own core) were a fifth to a third of a
login's cost. Lines of one kind go out together, as one event, at most
:data:`WITHIN` seconds after the first of them: on a quiet server still a
line a login, a moment late; in a storm a line for many.
"""

from __future__ import annotations

from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger

log = Logger()

#: Entries one log line lists at most: a storm makes several lines.
MOST = 100
#: Seconds an entry waits at most for others to go out with.
WITHIN = 0.5


class Gathered:
    """Entries of one kind (``what``: "logged in"), logged together as one
    event: ``what: entry; entry; ...``."""

    __slots__ = ("_call", "_entries", "clock", "stopped", "what")

    def __init__(self, clock: IReactorTime, what: str) -> None:
        self.clock = clock
        self.what = what
        self.stopped = False  # once the server has shut down: each entry at once
        self._entries: list[str] = []
        self._call: IDelayedCall | None = None

    def add(self, entry: str) -> None:
        self._entries.append(entry)
        if self.stopped or len(self._entries) >= MOST:
            self.flush()
        elif self._call is None:
            self._call = self.clock.callLater(WITHIN, self.flush)

    def flush(self) -> None:
        """Log what was gathered, now."""
        if self._call is not None:
            if self._call.active():
                self._call.cancel()
            self._call = None
        entries, self._entries = self._entries, []
        if entries:
            log.info("{what}: {entries}", what=self.what, entries="; ".join(entries))


class ConnectionLog:
    """Who logged in, who left and which connections closed."""

    def __init__(self, clock: IReactorTime) -> None:
        self._logins = Gathered(clock, "logged in")
        self._left = Gathered(clock, "left")
        self._closed = Gathered(clock, "closed")

    def logged_in(self, nick: str, id: int, version: int, account: bool, address: str) -> None:
        kind = ", account" if account else ""
        self._logins.add(f"{nick} as {id} (protocol {version}{kind}) from {address}")

    def left(self, nick: str, id: int, reason: str) -> None:
        self._left.add(f"{nick} ({id}): {reason}")

    def closed(self, id: int, address: str, was: str, why: str) -> None:
        self._closed.add(f"connection {id} from {address} ({was}): {why}")

    def stop(self) -> None:
        """Log what was gathered, and each later entry at once: the server
        has shut down, and leaves no timer behind."""
        for gathered in (self._logins, self._left, self._closed):
            gathered.stopped = True
            gathered.flush()
